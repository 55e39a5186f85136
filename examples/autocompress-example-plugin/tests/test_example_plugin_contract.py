"""The example plugin against autocompress's technique contract kit, plus what is specific to it."""

import torch
from autocompress_example_plugin import embedding_factorization
from autocompress_example_plugin.embedding_factorization import EmbeddingFactorization, choose_rank

from autocompress.measure import parameter_count
from autocompress.testing import TechniqueContract, tiny_model


class TestEmbeddingFactorization(TechniqueContract):
    technique = EmbeddingFactorization
    plugin = embedding_factorization
    # Tiny models: V = 128, H = 64, so the factorisation saves weights only for r <= 40.
    mild_config = {"rank_ratio": 0.625}
    strong_config = {"rank_ratio": 0.25}
    bad_configs = [{"rank_ratio": 0}, {"rank_ratio": 1.5}, {"rank_ratio": "half"}, {"rank": 8}]
    reduces_latency = False  # one small projection is added per token; the gain is memory


def _apply(model, rank_ratio, tmp_path):
    compressed, _ = TestEmbeddingFactorization().apply(model, {"rank_ratio": rank_ratio}, tmp_path)
    return compressed


def test_weights_really_go_from_v_times_h_to_r_times_v_plus_h(tmp_path):
    model = tiny_model("bert", vocab_size=1000, hidden=64)
    before = parameter_count(model)
    compressed = _apply(model, 0.25, tmp_path)
    embeddings = compressed.get_input_embeddings()
    assert embeddings.rank == 16 and embeddings.num_embeddings == 1000 and embeddings.embedding_dim == 64
    assert before - parameter_count(compressed) == 1000 * 64 - 16 * (1000 + 64)


def test_full_useful_rank_reproduces_the_embeddings(tmp_path):
    # r = 40 of 64 on a matrix of rank 40: the factorisation is exact up to float rounding.
    model = tiny_model("bert")
    embedding = model.get_input_embeddings()
    with torch.no_grad():
        embedding.weight.copy_(torch.randn(128, 40) @ torch.randn(40, 64) * 0.02)
    ids = torch.arange(128)
    expected = embedding(ids)
    compressed = _apply(model, 0.625, tmp_path)
    assert torch.allclose(compressed.get_input_embeddings()(ids), expected, atol=1e-5)


def test_no_factorisation_when_it_would_not_save_weights(tmp_path):
    model = tiny_model("bert")
    assert choose_rank(64, 1.0) == 64
    assert isinstance(_apply(model, 1.0, tmp_path).get_input_embeddings(), torch.nn.Embedding)
