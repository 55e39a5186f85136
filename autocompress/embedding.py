"""Sentence embeddings: a transformers encoder plus the pooling of a sentence-transformers model.

A sentence-transformers folder (``modules.json``: Transformer, Pooling, optional Normalize) is read
here without sentence-transformers (``read_sentence_model``), and its encoder becomes a
``SentenceEncoder``: a ``PreTrainedModel`` that holds the transformers encoder under the encoder's
own ``base_model_prefix`` (``bert``, ``roberta``, ``distilbert``, ...) and shares its config. So the
architecture adapters find the layers at the paths they name for every family, every technique
works unchanged, and ``autocompress.model_io`` saves and rebuilds it like any other model (the
manifest names this class). The pooling (``mean`` or ``cls``) and whether the embedding is
normalised live in the config (``sentence_pooling``, ``sentence_normalize``), so a rebuilt model
pools as the saved one did. Its output's ``embeddings`` (also under ``logits``, the name the
training loop, the teacher-logit cache and the contract kit read) is the sentence embedding.

Quality is agreement with the teacher, no labels needed: each example's "label" is the teacher's
embedding of it (``TextDataset.labels`` holds vectors; computed once when the task loads), so the
metrics (``Cosine``, ``RecallAt10``) and the loss (``embedding_loss``) compare a student with the
teacher whatever tokenizer a technique gave the student.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from autocompress.errors import InputError
from autocompress.metrics import QualityMetric

#: Pooling modes a sentence-transformers Pooling module may use that this task supports.
POOLINGS = ("mean", "cls")
#: The sentence-transformers module types a supported model may list in modules.json (by class name).
TRANSFORMER, POOLING, NORMALIZE = "Transformer", "Pooling", "Normalize"
#: Neighbours compared by ``RecallAt10``.
NEIGHBOURS = 10
#: Weight and temperature of the in-batch contrastive term of ``embedding_loss``.
CONTRAST_WEIGHT, CONTRAST_TEMPERATURE = 0.1, 0.05
#: Legacy Pooling config keys (sentence-transformers < 5) and the mode each switches on.
LEGACY_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                       "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                       "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


@dataclass(frozen=True)
class SentenceModel:
    """What a sentence-transformers folder says: where its encoder is, how it pools, whether it normalises."""

    encoder_dir: Path
    pooling: str
    normalize: bool


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found ({what})") from None
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); expected {what}") from None


def pooling_mode(config: dict, path: Path) -> str:
    """The one pooling mode of a Pooling module's config (new ``pooling_mode`` key or the legacy
    ``pooling_mode_*`` switches); InputError naming the file when it is not one of ``POOLINGS``."""
    if "pooling_mode" in config:
        modes = config["pooling_mode"]
        modes = [modes] if isinstance(modes, str) else list(modes or [])
    else:
        modes = [mode for key, mode in LEGACY_POOLING_KEYS.items() if config.get(key)]
    if len(modes) != 1 or modes[0] not in POOLINGS:
        raise InputError(f"{path}: pooling {'+'.join(map(str, modes)) or 'none'} is not supported "
                         f"(supported: {', '.join(POOLINGS)}, one mode)")
    return modes[0]


def read_sentence_model(directory: Path) -> SentenceModel:
    """A sentence-transformers folder's encoder directory, pooling and normalisation, from its
    ``modules.json``: a Transformer, then a Pooling (mean or cls), then optionally a Normalize.
    Anything else is an InputError naming the module (cheap: no weights are read)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"--model {directory}: directory not found")
    modules_path = directory / "modules.json"
    if not modules_path.is_file():
        raise InputError(f"--model {directory}: no modules.json (not a sentence-transformers model folder; "
                         "--task embedding needs one: a Transformer, a Pooling and optionally a Normalize module)")
    modules = _read_json(modules_path, "a sentence-transformers modules.json (a list of modules)")
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise InputError(f"{modules_path}: expected a list of modules, each with a 'type'")
    kinds = [str(m["type"]).rsplit(".", 1)[-1] for m in modules]
    for module, kind in zip(modules, kinds, strict=True):
        if kind not in (TRANSFORMER, POOLING, NORMALIZE):
            raise InputError(f"{modules_path}: module '{module.get('name', '?')}' of type {module['type']} is not "
                             f"supported (supported: {TRANSFORMER}, then {POOLING}, then optionally {NORMALIZE})")
    if kinds not in ([TRANSFORMER, POOLING], [TRANSFORMER, POOLING, NORMALIZE]):
        raise InputError(f"{modules_path}: modules {', '.join(kinds)} are not supported (supported: "
                         f"{TRANSFORMER}, then {POOLING}, then optionally {NORMALIZE})")
    encoder_dir = directory / str(modules[0].get("path") or "")
    pooling_dir = directory / str(modules[1].get("path") or "")
    pooling_config = pooling_dir / "config.json"
    pooling = pooling_mode(_read_json(pooling_config, "a sentence-transformers Pooling config"), pooling_config)
    return SentenceModel(encoder_dir, pooling, normalize=len(kinds) == 3)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str, normalize: bool) -> torch.Tensor:
    """Sentence embeddings from token states (batch, length, width): the mean over real tokens
    (``attention_mask`` 1) or the first token's state, then L2-normalised when ``normalize``."""
    if mode == "cls":
        pooled = hidden[:, 0]
    else:
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return nn.functional.normalize(pooled, p=2, dim=-1) if normalize else pooled


@dataclass
class SentenceEmbeddingOutput(ModelOutput):
    """A ``SentenceEncoder``'s output: one embedding per sentence, and the encoder's internals when asked."""

    embeddings: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None

    @property
    def logits(self) -> torch.Tensor:
        """The embeddings, under the name the training loop, distillation and the contract kit read."""
        return self.embeddings


class SentenceEncoder(PreTrainedModel):
    """A transformers encoder (``AutoModel``) and its pooling: ``forward`` returns sentence embeddings.

    The encoder sits under its own ``base_model_prefix`` and shares this model's config, so
    adapters, techniques and ``model_io`` see the same layout and configuration as for a
    classifier of the family. Pooling is read from the config (``sentence_pooling``,
    ``sentence_normalize``).
    """

    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config, encoder: nn.Module | None = None):
        super().__init__(config)
        if getattr(config, "sentence_pooling", None) not in POOLINGS:
            raise ValueError(f"config.sentence_pooling must be one of {', '.join(POOLINGS)}, "
                             f"got {getattr(config, 'sentence_pooling', None)!r}")
        encoder = encoder if encoder is not None else AutoModel.from_config(config)
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # BERT's [CLS] dense + tanh: sentence-transformers never reads it
        encoder.config = config
        self.base_model_prefix = encoder.base_model_prefix
        self.add_module(self.base_model_prefix, encoder)

    @classmethod
    def wrap(cls, encoder: PreTrainedModel, pooling: str, normalize: bool) -> SentenceEncoder:
        """``encoder`` (loaded weights and all) with the given pooling, in eval mode."""
        config = encoder.config
        config.sentence_pooling, config.sentence_normalize = pooling, bool(normalize)
        return cls(config, encoder).eval()

    @property
    def encoder_model(self) -> PreTrainedModel:
        """The transformers encoder inside (what a sentence-transformers Transformer module holds)."""
        return getattr(self, self.base_model_prefix)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.encoder_model.set_input_embeddings(value)

    def set_attn_implementation(self, attn_implementation, allow_all_kernels: bool = False):
        # The encoder's own class knows which implementations it has; both share one config.
        self.encoder_model.set_attn_implementation(attn_implementation)

    def _init_weights(self, module: nn.Module) -> None:
        pass  # the encoder initialised (or loaded) its own weights

    def forward(self, input_ids=None, attention_mask=None, output_hidden_states=None, output_attentions=None,
                **inputs) -> SentenceEmbeddingOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.encoder_model(input_ids=input_ids, attention_mask=attention_mask,
                                 output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                                 **inputs)
        embeddings = pool(out[0], attention_mask, self.config.sentence_pooling, self.config.sentence_normalize)
        return SentenceEmbeddingOutput(embeddings=embeddings, hidden_states=getattr(out, "hidden_states", None),
                                       attentions=getattr(out, "attentions", None))


def load_sentence_encoder(model: SentenceModel, *, use_safetensors: bool = True,
                          trust_remote_code: bool = False) -> tuple[SentenceEncoder, object]:
    """The folder's encoder as a ``SentenceEncoder`` (eval mode) and its tokenizer, offline."""
    from transformers import AutoTokenizer

    encoder = AutoModel.from_pretrained(model.encoder_dir, local_files_only=True, use_safetensors=use_safetensors,
                                        trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(model.encoder_dir, local_files_only=True,
                                              trust_remote_code=trust_remote_code)
    return SentenceEncoder.wrap(encoder, model.pooling, model.normalize), tokenizer


# -- what the teacher says, and how close a student is -------------------------------------------
def embed(model: nn.Module, data, batch_size: int = 64) -> torch.Tensor:
    """The model's embedding of every example of ``data`` (``autocompress.training.Encoded``), in order."""
    from autocompress.training import logits_of

    model.eval()
    with torch.inference_mode():
        return torch.cat([logits_of(model, inputs) for inputs, _ in data.batches(batch_size)])


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """How far student embeddings are from the teacher's, per example: cosine distance + mean
    squared difference + ``CONTRAST_WEIGHT`` x an in-batch contrastive term (the student's
    embedding of each sentence must be closer to the teacher's embedding of that sentence than of
    the others in the batch: what keeps neighbours, and a loss whose gradient is not zero at the
    teacher itself, so gradient-based scoring such as head pruning's has a signal)."""
    student, teacher = student.float(), teacher.float()
    cosine = 1.0 - nn.functional.cosine_similarity(student, teacher, dim=-1)
    squared = (student - teacher).pow(2).mean(dim=-1)
    similarity = nn.functional.normalize(student, dim=-1) @ nn.functional.normalize(teacher, dim=-1).T
    target = torch.arange(len(student), device=student.device)
    contrast = nn.functional.cross_entropy(similarity / CONTRAST_TEMPERATURE, target, reduction="none")
    losses = cosine + squared + CONTRAST_WEIGHT * contrast
    return losses.sum() if reduction == "sum" else losses if reduction == "none" else losses.mean()


def mean_cosine(student: torch.Tensor, teacher: torch.Tensor) -> float:
    """Mean cosine similarity between each student embedding and the teacher's of the same text."""
    return float(nn.functional.cosine_similarity(student.float(), teacher.float(), dim=-1).mean())


def nearest(embeddings: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of each row's ``k`` nearest other rows by cosine similarity (itself excluded)."""
    unit = nn.functional.normalize(embeddings.float(), dim=-1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(float("-inf"))
    return similarity.topk(k, dim=-1).indices


def recall_at_k(student: torch.Tensor, teacher: torch.Tensor, k: int = NEIGHBOURS) -> float:
    """The share of the teacher's ``k`` nearest neighbours of each text (among these texts) that the
    student's ``k`` nearest recover, averaged over texts (``k`` shrinks to the texts there are)."""
    k = min(k, len(teacher) - 1)
    if k < 1:
        raise ValueError(f"recall@{NEIGHBOURS} needs at least 2 texts, got {len(teacher)}")
    ours, theirs = nearest(student, k), nearest(teacher, k)
    found = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ours, theirs, strict=True))
    return found / (k * len(teacher))


class Cosine(QualityMetric):
    name = "cosine"
    description = "mean cosine similarity of the student's and the teacher's embedding of each held-out text"

    def score(self, model, data, batch_size: int = 64) -> float:
        return mean_cosine(embed(model, data, batch_size), data.labels)

    def also_recorded(self) -> tuple[QualityMetric, ...]:
        return (RecallAt10(),)


class RecallAt10(QualityMetric):
    name = "recall@10"
    description = "share of the teacher's 10 nearest neighbours of each held-out text that the student's recover"

    def score(self, model, data, batch_size: int = 64) -> float:
        return recall_at_k(embed(model, data, batch_size), data.labels)

    def also_recorded(self) -> tuple[QualityMetric, ...]:
        return (Cosine(),)


#: The metrics ``--metric`` names for an embedding task (the first is the default).
EMBEDDING_METRICS: dict[str, type[QualityMetric]] = {cls.name: cls for cls in (RecallAt10, Cosine)}


def embedding_metric(name: str | None) -> QualityMetric:
    """The embedding metric ``name`` (None: recall@10); an InputError naming ``--metric`` otherwise."""
    if name is None:
        return RecallAt10()
    key = str(name).strip().lower()
    if key in EMBEDDING_METRICS:
        return EMBEDDING_METRICS[key]()
    valid = ", ".join(f"{k} ({v.description})" for k, v in EMBEDDING_METRICS.items())
    raise InputError(f"--metric {name!r}: not a metric of the embedding task (valid: {valid})")
