"""The language-model task (``--task lm``): a user's causal LM compressed on their own text.

``--model`` is a local causal-LM checkpoint (a ``*ForCausalLM``: Llama, SmolLM2, Qwen2/3, Mistral,
...) or a Hub id from the local cache; it is the teacher as given (no fine-tuning). ``--data`` is a
corpus file (``autocompress.corpus``: .txt with one document per line, JSON lines with a text
field, or chat JSON lines with ``messages`` rendered through the tokenizer's chat template),
split seeded 80 / 10 / 10 into train / validation / test.

Quality is the mean log-likelihood per predicted token (``autocompress.metrics.LogLikelihood``),
shown as perplexity; ``--max-perplexity-increase`` limits it. Recovery trains on next-token
cross-entropy, distillation on the teacher's distribution over the vocabulary at every token.
Candidates are saved and reloaded as the checkpoint's ``*ForCausalLM`` class.
"""

from __future__ import annotations

from pathlib import Path

from autocompress import hookimpl
from autocompress.corpus import Corpus, read_corpus, split_documents
from autocompress.errors import InputError
from autocompress.hashing import directory_sha256
from autocompress.hub import card_license, resolve_model
from autocompress.metrics import LogLikelihood, QualityMetric
from autocompress.plugins.local_task import check_model_dir, is_causal_lm, load_causal_lm
from autocompress.task import LoadedTask, TaskInfo, TaskProvider


class LanguageModelTask(TaskProvider):
    name = "lm"
    description = ("your causal language model (--model: a *ForCausalLM checkpoint) on your text (--data: .txt, one "
                   "document per line; JSON lines with a text field or chat messages); quality is perplexity")
    pipeline_tag = "text-generation"
    default_latency = "token"  # a language model is used to generate: ms per generated token

    def validate(self) -> None:
        o = self.options
        if o.model is None or o.data is None:
            raise InputError("--task lm needs --model (a causal language model checkpoint) and --data (a .txt or "
                             ".jsonl file of text)")
        for value, option in ((o.text_pair_column, "--text-pair-column"), (o.prompt_template, "--prompt-template"),
                              (o.label_words, "--label-words"), (o.unlabeled, "--unlabeled")):
            if value is not None:
                raise InputError(f"{option}: the language-model task (--task lm) takes no {option}; it models "
                                 "the --data text itself")
        self.quality_metric()
        model = resolve_model(o.model)
        config = check_model_dir(model.directory, o.allow_pickle)
        if not is_causal_lm(config):
            raise InputError(f"--model {o.model}: architectures {config.get('architectures')} is not a causal "
                             "language model (*ForCausalLM), which --task lm compresses; a classifier or encoder "
                             "takes --task local")
        corpus = read_corpus(o.data, o.text_column)
        if corpus.chat and not _has_chat_template(model.directory):
            raise InputError(f"{o.data}: chat data (messages) needs a tokenizer with a chat template, and "
                             f"--model {o.model} has none; give plain texts (a text field) instead")
        self._model_type = config.get("model_type")
        self._validated = (model, corpus)

    def quality_metric(self) -> QualityMetric:
        metric = self.options.metric
        if metric is not None and str(metric).strip().lower() not in (LogLikelihood.name, "perplexity"):
            raise InputError(f"--metric {metric!r}: the language-model task measures perplexity (the mean "
                             f"log-likelihood per token, '{LogLikelihood.name}') only")
        return LogLikelihood()

    def model_type(self) -> str | None:
        return getattr(self, "_model_type", None)

    def load(self) -> LoadedTask:
        if getattr(self, "_validated", None) is None:
            self.validate()
        model, corpus = self._validated
        teacher, tokenizer = load_causal_lm(model, self.options)
        data = split_documents(corpus.rendered(tokenizer), self.options.seed).limit_train(self.options.train_limit)
        return LoadedTask(
            teacher=teacher, tokenizer=tokenizer, data=data,
            fingerprint=f"{directory_sha256(model.directory)[:12]}-{data.fingerprint()[:12]}",
            description=(f"{model.describe()} as a language model on {corpus.path} ({_documents(corpus)}: "
                         f"{len(data.train)} train, {len(data.validation)} validation, {len(data.test)} test)"),
            info=TaskInfo(pipeline_tag=self.pipeline_tag, base_model=model.hub_id, model_source=model.describe(),
                          license=card_license(model.directory), dataset=str(self.options.data)),
        )


def _has_chat_template(directory: Path) -> bool:
    """Whether the checkpoint's tokenizer files hold a chat template (read without loading it)."""
    import json

    if (directory / "chat_template.jinja").is_file() or (directory / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(isinstance(config, dict) and config.get("chat_template"))


def _documents(corpus: Corpus) -> str:
    return f"{len(corpus)} {'conversations' if corpus.chat else 'documents'}"


@hookimpl
def autocompress_register_tasks(register):
    register.add(LanguageModelTask)
