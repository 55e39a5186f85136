"""A user's own task: their model (or the demo's base model) and their labelled data.

``--model`` is a local checkpoint directory or a Hugging Face Hub id found in the local cache
(``autocompress.hub``; a directory of the same spelling wins). A sequence classifier is taken as
the (already fine-tuned) teacher. A base model (``BertModel``, ``BertForMaskedLM``, a
sentence-transformers folder, ...) is first fine-tuned on the data's train split into the
teacher, once, cached by content hash (``autocompress.teacher``, shared with the demo). Without
``--model`` the demo's base model, all-MiniLM-L6-v2, is fine-tuned.

A token classifier (``BertForTokenClassification``, ...) makes it a token-classification (NER) task:
``--data`` holds words with BIO tags (``autocompress.token_data``), the metric is entity-level F1
(``autocompress.entities``). A base model with tagged ``--data`` is fine-tuned into a token classifier
first (its tags: O, then B-/I- of each entity type the data names); a base model with ``--metric
pearson`` or ``spearman`` into a one-output regression model.

A causal language model (``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ...) becomes a zero-shot prompted
classifier: each text is rendered through ``--prompt-template`` and the class is the ``--label-words``
word the model would say next (``autocompress.prompted``); no fine-tuning.

``--data`` is a data file or a saved ``datasets`` directory (``autocompress.data``). Weights load
from safetensors only; pickle-based files (``pytorch_model.bin``) are refused unless the user
opts in, and ``trust_remote_code`` stays off unless set.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from autocompress import hookimpl
from autocompress.data import TaskData, load_task_data
from autocompress.demo_data import default_cache_dir
from autocompress.entities import token_metric
from autocompress.errors import InputError
from autocompress.hashing import directory_sha256
from autocompress.hub import ResolvedModel, card_license, resolve_model
from autocompress.metrics import REGRESSION_METRICS, QualityMetric, classification_metric, regression_metric
from autocompress.task import LoadedTask, TaskInfo, TaskProvider, load_classifier
from autocompress.teacher import demo_base_model, fine_tuned_teacher, teacher_recipe
from autocompress.token_data import (
    TAGGED_ONLY_SUFFIXES,
    TAGS_KEY,
    TOKENS_KEY,
    check_model_tags,
    is_tagged_data,
    load_tagged_data,
)

PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def check_model_dir(model_dir: Path, allow_pickle: bool) -> dict:
    """Cheap checks of a checkpoint directory; returns its config.json as a dict."""
    if not model_dir.exists():
        raise InputError(f"--model {model_dir}: directory not found")
    if not model_dir.is_dir():
        raise InputError(f"--model {model_dir}: not a directory (expected a Hugging Face checkpoint folder)")
    config_path = model_dir / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--model {model_dir}: no config.json (not a Hugging Face checkpoint)") from None
    except ValueError as exc:
        raise InputError(f"{config_path}: not valid JSON ({exc}); expected a Hugging Face config.json") from None
    except OSError as exc:
        raise InputError(f"{config_path}: unreadable: {exc}") from None
    if not isinstance(config, dict):
        raise InputError(f"{config_path}: expected a JSON object (a Hugging Face config.json), "
                         f"got {type(config).__name__}")
    has_safe = any((model_dir / name).is_file() for name in SAFE_WEIGHTS)
    has_pickle = any((model_dir / name).is_file() for name in PICKLE_WEIGHTS)
    if not has_safe and has_pickle and not allow_pickle:
        raise InputError(
            f"--model {model_dir}: weights are only in pickle format (pytorch_model.bin), which can run "
            "arbitrary code when loaded; convert them to safetensors or pass --allow-pickle if you trust the file"
        )
    if not has_safe and not has_pickle:
        raise InputError(f"--model {model_dir}: no weights file (expected model.safetensors)")
    return config


def is_classifier(config: dict) -> bool:
    """A sequence classifier (the teacher as it is), rather than a base model to fine-tune first.

    A config that names no architecture is taken as a classifier, as before base models were supported.
    """
    architectures = config.get("architectures") or []
    return not architectures or any(a.endswith("ForSequenceClassification") for a in architectures)


def is_causal_lm(config: dict) -> bool:
    """A causal language model (``*ForCausalLM``, or another of transformers' causal-LM classes such as
    ``GPT2LMHeadModel``), used as a prompted classifier."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    return any(a.endswith("ForCausalLM") or a in causal for a in config.get("architectures") or [])


def is_token_classifier(config: dict) -> bool:
    """A token classifier (``*ForTokenClassification``): the teacher of a token-classification (NER) task."""
    return any(a.endswith("ForTokenClassification") for a in config.get("architectures") or [])


def token_tags(config: dict, config_path: Path) -> list[str]:
    """A token classifier's tags in id order (its ``id2label``), checked to be BIO tags."""
    id2label = config.get("id2label") or {}
    try:
        tags = [str(id2label[key]) for key in sorted(id2label, key=int)]
    except ValueError:
        raise InputError(f"{config_path}: id2label keys must be class ids (0, 1, ...)") from None
    if not tags:
        raise InputError(f"{config_path}: a token classifier needs id2label naming its tags (O, B-TYPE, I-TYPE)")
    check_model_tags(tags, config_path)
    return tags


def check_base_model(config: dict, config_path: Path, head: str = "sequence") -> None:
    """A base model must be of a kind transformers can put the task's head on: ``sequence`` (classes or
    a score) or ``token`` (a tag per word)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
    )

    heads = MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES if head == "token" else \
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    model_type = config.get("model_type")
    if model_type not in heads:
        raise InputError(
            f"{config_path}: architectures {config.get('architectures')} is not a {head} classifier, and "
            f"transformers has no {head}-classification head for model_type {model_type!r} to fine-tune one "
            f"from it (expected a text encoder such as BertModel, or a classifier such as "
            f"BertFor{head.capitalize()}Classification)")


def config_num_labels(config: dict) -> int:
    if "id2label" in config:
        return len(config["id2label"])
    return int(config.get("num_labels", 2))


def _has_safetensors(model_dir: Path) -> bool:
    return any((model_dir / name).is_file() for name in SAFE_WEIGHTS)


def load_causal_lm(model: ResolvedModel, options) -> tuple:
    """The checkpoint as a causal LM (eval mode) and its tokenizer, given a padding token (its
    end-of-sequence token, when it has none: batches are padded); an InputError naming ``--model``
    when either does not load. ``options``: the task's (``progress``, ``trust_remote_code``)."""
    try:
        causal_lm, tokenizer = load_classifier(
            model.directory, use_safetensors=_has_safetensors(model.directory),
            trust_remote_code=options.trust_remote_code, progress=options.progress, auto_class="AutoModelForCausalLM")
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(f"--model {model.directory}: cannot load the causal LM or its tokenizer "
                         f"({type(exc).__name__}: {first_line})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return causal_lm, tokenizer


class LocalTask(TaskProvider):
    name = "local"
    description = ("your own data (--data: a file or a saved datasets directory) and model (--model: a classifier, "
                   "or a base model fine-tuned first; a directory or a cached Hub id; default: the demo's base model)")

    def _data(self, regression: bool = False) -> TaskData:
        o = self.options
        data = load_task_data(o.data, o.text_column, o.label_column, seed=o.seed, drop_missing=o.drop_missing,
                              pair_column=o.text_pair_column, regression=regression)
        return data.limit_train(o.train_limit)

    def quality_metric(self) -> QualityMetric:
        """Regression (a classifier checkpoint with one output): pearson or spearman; otherwise a
        classification metric (accuracy or f1)."""
        if getattr(self, "_regression", None) is None:
            self.validate()
        if self._tags is not None:
            return token_metric(self.options.metric, self._tags)
        metric = regression_metric if self._regression else classification_metric
        return metric(self.options.metric)

    def _model(self) -> ResolvedModel:
        if self.options.model is None:
            return demo_base_model()
        return resolve_model(self.options.model)

    def validate(self) -> None:
        o = self.options
        if o.data is None:
            raise InputError(f"--model {o.model}: your own task needs --data (a file or a saved datasets directory "
                             "with labelled texts) to compress the model on")
        model = self._model()
        config = check_model_dir(model.directory, o.allow_pickle)
        self._model_type = config.get("model_type")
        self._tags = token_tags(config, model.directory / "config.json") if is_token_classifier(config) else None
        self._regression = is_classifier(config) and config_num_labels(config) == 1
        if self._tags is not None:
            self._validated = (model, "token", self._token_data())
            return
        base = not is_classifier(config) and not is_causal_lm(config)
        tokens_key, _ = self._tagged_keys()
        if base and is_tagged_data(o.data, tokens_key):  # a token classifier is fine-tuned from the base model
            check_base_model(config, model.directory / "config.json", head="token")
            data = self._token_data()  # no tags yet: the data's own become the new model's
            self._tags = data.label_names
            self._validated = (model, False, data)
            return
        if Path(o.data).suffix.lower() in TAGGED_ONLY_SUFFIXES:
            raise InputError(f"--data {o.data} holds tagged words (token classification), which needs a token "
                             f"classifier (a *ForTokenClassification checkpoint) or a base model (such as BertModel, "
                             f"fine-tuned into one first) as --model; --model {o.model or 'the demo base model'} is "
                             f"{', '.join(config.get('architectures') or [])}")
        regression_metric_asked = o.metric is not None and str(o.metric).strip().lower() in REGRESSION_METRICS
        if base and regression_metric_asked:  # a one-output regression head is fine-tuned from the base model
            self._regression = True
        if regression_metric_asked and not self._regression:
            raise InputError(f"--metric {o.metric} measures regression, which needs a regression checkpoint as "
                             f"--model (a sequence classifier with one output, num_labels 1) or a base model "
                             f"(such as BertModel, fine-tuned into one first); --model "
                             f"{o.model or 'the demo base model'} is a classifier of "
                             f"{config_num_labels(config)} classes")
        if self._regression:
            self.quality_metric()  # a classification metric for a regression model is refused here
            if base:
                check_base_model(config, model.directory / "config.json")
            data = self._data(regression=True)
            self._validated = (model, not base, data)
            return
        if is_causal_lm(config):
            check_base_model(config, model.directory / "config.json")
            if o.text_pair_column is not None:
                raise InputError(f"--text-pair-column {o.text_pair_column}: a causal LM --model classifies one text "
                                 "in a prompt; sentence pairs need an encoder (a classifier or a base model such as "
                                 "BertModel)")
            data = self._data()
            self._prompt().words(data.label_names)  # one word per class, before anything loads
        elif is_classifier(config):
            data = self._data()
            expected = config_num_labels(config)
            if expected != data.num_labels:
                raise InputError(
                    f"--model {o.model} has {expected} labels but --data {o.data} has {data.num_labels} classes "
                    f"({', '.join(data.label_names)})"
                )
        else:
            check_base_model(config, model.directory / "config.json")
            data = self._data()
        self._validated = (model, "causal" if is_causal_lm(config) else is_classifier(config), data)

    def _token_data(self) -> TaskData:
        """The tagged sentences of a token-classification task, checked against the model's tags (or, from
        a base model, giving the tags: ``self._tags`` None)."""
        o = self.options
        token_metric(o.metric, self._tags or ())  # a metric other than entity F1 is refused first
        if o.text_pair_column is not None:
            raise InputError(f"--text-pair-column {o.text_pair_column}: not supported for token classification "
                             f"(--data {o.data} holds tagged sentences)")
        tokens_key, tags_key = self._tagged_keys()
        data = load_tagged_data(o.data, self._tags, seed=o.seed, tokens_key=tokens_key, tags_key=tags_key)
        return data.limit_train(o.train_limit)

    def _tagged_keys(self) -> tuple[str, str]:
        """The keys (columns) of tagged data's words and tags: ``--text-column`` / ``--label-column`` when
        set, else ``tokens`` / ``tags``."""
        o = self.options
        return (TOKENS_KEY if o.text_column == "text" else o.text_column,
                TAGS_KEY if o.label_column == "label" else o.label_column)

    def _prompt(self):
        from autocompress.prompted import DEFAULT_TEMPLATE, Prompt

        return Prompt(self.options.prompt_template or DEFAULT_TEMPLATE, self.options.label_words)

    def model_type(self) -> str | None:
        return getattr(self, "_model_type", None)

    def load(self) -> LoadedTask:
        o = self.options
        validated = getattr(self, "_validated", None)
        if validated is None:
            self.validate()
            validated = self._validated
        model, classifier, data = validated
        info = TaskInfo(base_model=model.hub_id, model_source=model.describe(),
                        license=card_license(model.directory),
                        dataset=str(o.data))
        if classifier == "causal":
            return self._prompted(model, data, info)
        token = self._tags is not None
        if token:
            info = replace(info, pipeline_tag="token-classification")
        if not classifier:
            teacher, tokenizer, record = fine_tuned_teacher(
                model, data, o.cache_dir or default_cache_dir(), teacher_recipe(o), metric=self.quality_metric(),
                use_safetensors=_has_safetensors(model.directory), trust_remote_code=o.trust_remote_code,
                progress=o.progress)
            return LoadedTask(
                teacher=teacher, tokenizer=tokenizer, data=data,
                fingerprint=f"{record['base_model'][:12]}-{record['data'][:12]}-{Path(record['directory']).name}",
                description=(f"{model.describe()} fine-tuned here on {o.data} into the teacher "
                             f"(validation {record.get('validation_metric', 'accuracy')} "
                             f"{record['validation_accuracy']:.4f}; cached in {record['directory']})"),
                info=replace(info, teacher_training=record),
            )
        use_safetensors = _has_safetensors(model.directory)
        try:
            teacher, tokenizer = load_classifier(
                model.directory, use_safetensors=use_safetensors, trust_remote_code=o.trust_remote_code,
                progress=o.progress,
                auto_class="AutoModelForTokenClassification" if token else "AutoModelForSequenceClassification")
        except Exception as exc:  # corrupt weights, unknown model type: transformers and safetensors raise many kinds
            weights = SAFE_WEIGHTS[0] if use_safetensors else PICKLE_WEIGHTS[0]
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(f"--model {model.directory}: cannot load the checkpoint ({type(exc).__name__}: "
                             f"{first_line}); expected a complete Hugging Face "
                             f"{'token' if token else 'sequence'}-classification checkpoint "
                             f"with {weights}, config.json and the tokenizer files") from None
        if token and not getattr(tokenizer, "is_fast", False):
            raise InputError(f"--model {model.directory}: token classification aligns tags with word pieces, which "
                             f"needs a fast tokenizer (tokenizer.json); {type(tokenizer).__name__} is not one")
        return LoadedTask(
            teacher=teacher,
            tokenizer=tokenizer,
            data=data,
            fingerprint=f"{directory_sha256(model.directory)[:12]}-{data.fingerprint()[:12]}",
            description=f"{model.describe()} on {o.data}",
            info=info,
        )


    def _prompted(self, model: ResolvedModel, data: TaskData, info: TaskInfo) -> LoadedTask:
        """A causal LM as a zero-shot prompted classifier of ``data`` (texts rendered through the prompt)."""
        from autocompress.prompted import zero_shot_teacher

        o = self.options
        causal_lm, tokenizer = load_causal_lm(model, o)
        teacher, rendered, training = zero_shot_teacher(causal_lm, tokenizer, data, self._prompt(), o.max_length)
        training["base_model_name"] = model.hub_id or str(model.directory)
        return LoadedTask(
            teacher=teacher, tokenizer=tokenizer, data=rendered,
            fingerprint=f"{directory_sha256(model.directory)[:12]}-{rendered.fingerprint()[:12]}",
            description=(f"{model.describe()} as a prompted classifier on {o.data} (zero-shot validation "
                         f"accuracy {training['validation_accuracy']:.4f})"),
            info=replace(info, teacher_training=training),
        )


@hookimpl
def autocompress_register_tasks(register):
    register.add(LocalTask)
