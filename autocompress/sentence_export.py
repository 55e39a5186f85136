"""The sentence-transformers files of an exported embedding model (``--task embedding``).

``sentence_transformers.SentenceTransformer(DIR)`` loads an export of a ``SentenceEncoder``
(``autocompress.embedding``):

- when plain transformers can rebuild it (every layer has the shape config.json describes, no
  post-training step), as sentence-transformers itself saves a model: ``modules.json`` lists its
  Transformer (the folder itself: ``AutoModel`` loads the encoder), a Pooling with the recorded
  pooling and, when the embeddings were normalised, a Normalize;
- otherwise (per-layer shapes, int8) through ``autocompress_sentence.py``, a sentence-transformers
  module that ``modules.json`` names and that runs ``autocompress.load_pretrained`` (tokenizer,
  encoder, pooling and post steps included), so ``SentenceTransformer(DIR, trust_remote_code=True)``
  runs the model that was measured; without ``trust_remote_code`` sentence-transformers refuses it.

Importing this module loads nothing heavy (``autocompress.export`` names it in ``TASK_TYPES``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ST_MODULE = "autocompress_sentence"
ST_CLASS = "AutocompressSentenceEncoder"
#: The longest input sentence-transformers feeds when config.json names no position limit.
DEFAULT_MAX_SEQ_LENGTH = 512

ST_SHIM = '''"""Loads this autocompress export as a sentence-transformers module.

Its layer shapes differ from what config.json describes, or it records post-training steps such
as int8 quantization, so sentence-transformers' own Transformer module cannot rebuild it. With
trust_remote_code=True, sentence-transformers uses this module, which calls
autocompress.load_pretrained (pip install autocompress): tokenizer, encoder, pooling and the
recorded steps, i.e. the model that was measured.
"""

import torch

try:
    from sentence_transformers.base.modules import InputModule
except ImportError:  # sentence-transformers < 6
    from sentence_transformers.models import InputModule


class {st_class}(InputModule):
    save_in_root = True

    def __init__(self, model, tokenizer, max_seq_length={max_seq_length}):
        super().__init__()
        self.model, self.tokenizer, self.max_seq_length = model, tokenizer, max_seq_length

    def preprocess(self, inputs, prompt=None, **kwargs):
        texts = [prompt + text for text in inputs] if prompt else list(inputs)
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length,
                                   return_tensors="pt"))

    def tokenize(self, texts, **kwargs):
        return self.preprocess(texts, **kwargs)

    def forward(self, features, **kwargs):
        inputs = {{k: features[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in features}}
        features["sentence_embedding"] = self.model(**inputs).embeddings
        return features

    def get_sentence_embedding_dimension(self):
        return {dimension}

    get_embedding_dimension = get_sentence_embedding_dimension

    @classmethod
    def load(cls, model_name_or_path, subfolder="", token=None, cache_folder=None, revision=None,
             local_files_only=False, **kwargs):
        import os

        import autocompress

        directory = str(model_name_or_path)
        if not os.path.isdir(directory):  # a Hub repository id: its files from the cache (or the Hub)
            from huggingface_hub import snapshot_download

            directory = snapshot_download(directory, revision=revision, token=token, cache_dir=cache_folder,
                                          local_files_only=local_files_only)
        model, tokenizer = autocompress.load_pretrained(directory)
        return cls(model, tokenizer)

    def save(self, output_path, *args, **kwargs):
        raise NotImplementedError("save it with autocompress (autocompress export), which wrote this folder")
'''


def _width(config: dict[str, Any]) -> int:
    for name in ("hidden_size", "dim", "d_model"):
        if isinstance(config.get(name), int):
            return config[name]
    raise ValueError("config.json names no hidden width (hidden_size)")


def write_sentence_transformers_files(directory: Path, plain: bool) -> dict[str, Any]:
    """Make ``directory`` (an export of a ``SentenceEncoder``) a sentence-transformers folder; returns
    what was written and how it loads."""
    config = json.loads((directory / "config.json").read_text())
    pooling, normalize = config["sentence_pooling"], bool(config.get("sentence_normalize"))
    dimension = _width(config)
    max_seq_length = min(int(config.get("max_position_embeddings") or DEFAULT_MAX_SEQ_LENGTH), DEFAULT_MAX_SEQ_LENGTH)
    if plain:
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
        (directory / "1_Pooling").mkdir(exist_ok=True)
        (directory / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": dimension, "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False}, indent=2) + "\n")
        (directory / "sentence_bert_config.json").write_text(json.dumps(
            {"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2) + "\n")
    else:
        modules = [{"idx": 0, "name": "0", "path": "", "type": f"{ST_MODULE}.{ST_CLASS}"}]
        (directory / f"{ST_MODULE}.py").write_text(ST_SHIM.format(st_class=ST_CLASS, max_seq_length=max_seq_length,
                                                                  dimension=dimension))
    (directory / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    card = directory / "README.md"
    if card.is_file():
        with card.open("a", encoding="utf-8") as out:
            out.write(usage_section(pooling, normalize, plain))
    return {"modules": [module["type"] for module in modules], "trust_remote_code": not plain,
            "pooling": pooling, "normalize": normalize}


def usage_section(pooling: str, normalize: bool, plain: bool) -> str:
    """The model card's section on loading the folder with sentence-transformers."""
    trust = "" if plain else ", trust_remote_code=True"
    how = ("sentence-transformers' own modules load it: the encoder (Transformer), then the pooling"
           if plain else
           f"`{ST_MODULE}.py` (named in modules.json) loads it through `autocompress.load_pretrained`, because "
           "its layer shapes or post-training steps are beyond sentence-transformers' Transformer module; "
           "without `trust_remote_code=True` sentence-transformers refuses the folder")
    return "\n".join([
        "", "## Use it with sentence-transformers", "",
        "```python",
        "from sentence_transformers import SentenceTransformer  # pip install \"autocompress[embedding]\"",
        f"model = SentenceTransformer(\"path/to/this/directory\"{trust})",
        "embeddings = model.encode([\"a gorgeous, witty film\"])",
        "```", "",
        f"Pooling: {pooling}{', then L2-normalised' if normalize else ''}. {how}.", "",
    ])
