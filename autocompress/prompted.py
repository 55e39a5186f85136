"""A causal language model used as a classifier by scoring label words after a prompt ("prompt learning").

The text is rendered through a template (``Review: {text}\\nSentiment:``) and the model's next-token
logits for the first token of each label word (`` negative`` / `` positive``) are the class logits:
the class whose word the model would most likely say next. This is built as the family's own
``*ForSequenceClassification`` (which reads the last real token, as a causal model must): its decoder
is the causal LM's, and its score head holds the LM head's rows of the label words' first tokens.
So the classifier's logits are exactly those next-token logits, every technique, target, export
and ``transformers.pipeline`` works on it as on any classifier, and the head costs ``labels x hidden``
weights instead of ``vocabulary x hidden``.

The prompt (template and label words) is recorded in the model's config (``autocompress_prompt``)
and in run.json, because a caller must render texts through the same template.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

from autocompress.data import TaskData, TextDataset
from autocompress.errors import InputError

DEFAULT_TEMPLATE = "Review: {text}\nSentiment:"
#: The config attribute that keeps the prompt with the model (saved in config.json).
CONFIG_ATTRIBUTE = "autocompress_prompt"


@dataclass(frozen=True)
class Prompt:
    """How a text becomes a prompt, and which word stands for each class."""

    template: str = DEFAULT_TEMPLATE
    #: One word per class, in label order (the label names when None); a leading space is added
    #: when missing, because the word follows the template's last token.
    label_words: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.template.count("{text}") != 1:
            raise InputError(f"--prompt-template {self.template!r}: must contain {{text}} exactly once")
        try:
            self.template.format(text="")
        except (KeyError, IndexError, ValueError) as exc:
            raise InputError(f"--prompt-template {self.template!r}: only {{text}} may be a field "
                             f"(write other braces as {{{{ and }}}}): {exc}") from None

    def render(self, text: str) -> str:
        return self.template.format(text=text)

    def words(self, label_names: list[str]) -> list[str]:
        """The label words, one per class, each with its leading space."""
        words = list(self.label_words) if self.label_words is not None else list(label_names)
        if len(words) != len(label_names):
            raise InputError(f"--label-words: {len(words)} words ({', '.join(words)}) for {len(label_names)} "
                             f"classes ({', '.join(label_names)}); give one word per class, in label order")
        return [word if word.startswith(" ") else f" {word.strip()}" for word in words]

    def as_dict(self, label_names: list[str]) -> dict[str, Any]:
        return {"template": self.template, "label_words": self.words(label_names)}


def prompt_of(model: Any) -> Prompt | None:
    """The prompt a prompted classifier keeps in its config (None for any other model)."""
    recorded = getattr(getattr(model, "config", None), CONFIG_ATTRIBUTE, None)
    if not isinstance(recorded, dict):
        return None
    return Prompt(recorded["template"], tuple(recorded.get("label_words") or ()) or None)


def causal_lm_of(model: Any, *, timing_only: bool = False) -> Any:
    """The causal LM a prompted classifier came from, as compressed (any other model is returned as it
    is): the classifier's own decoder modules (pruned, quantized or not; shared, not copied) under its
    family's ``*ForCausalLM``, with the output head tied to the input embeddings again (an int8 head
    of their values when they are stored in int8). So a model the search found as a classifier
    generates text again, and its time per generated token and its perplexity are an LLM's: the head
    projects onto the whole vocabulary, which the classifier's two-row score head would hide.

    That head is the original LM head when the checkpoint tied the two (SmolLM2, Llama 3.2, GPT-2,
    the tiny test Llama). When it did not, the classifier kept only the label words' rows of it: a
    ValueError, unless ``timing_only`` (``--latency token``'s measurement), which needs a head of the
    LM head's shape and cost, not its weights."""
    import torch
    from transformers import AutoModelForCausalLM

    if prompt_of(model) is None:
        return model
    if not timing_only and not getattr(model.config, "tie_word_embeddings", False):
        raise ValueError(f"{type(model).__name__}: the causal LM's output head was not tied to its input "
                         "embeddings, and the classifier kept only the label words' rows of it")
    embeddings = model.get_input_embeddings()
    config = model.config.__class__.from_dict(model.config.to_dict())
    delattr(config, CONFIG_ATTRIBUTE)
    config.vocab_size = embeddings.num_embeddings
    config.use_cache = True
    config.architectures = None
    with torch.device("meta"):  # every module below is replaced by the classifier's own
        causal_lm = AutoModelForCausalLM.from_config(config)
    setattr(causal_lm, causal_lm.base_model_prefix, getattr(model, model.base_model_prefix))
    causal_lm.set_output_embeddings(_head_of(embeddings))
    left = [name for name, tensor in [*causal_lm.named_parameters(), *causal_lm.named_buffers()] if tensor.is_meta]
    if left:
        raise ValueError(f"{type(causal_lm).__name__} has parts the classifier does not: {', '.join(left[:5])}")
    return causal_lm.eval()


def _head_of(embeddings: Any) -> Any:
    """An output head over ``embeddings``' table: tied to it when it is a float table (a factorised one
    through its two factors); an int8 table (``quantization`` with ``embeddings: true``) gets an int8
    dynamic head of the same values."""
    import torch

    from autocompress.arch import FactorizedEmbedding

    if isinstance(embeddings, FactorizedEmbedding):
        return _factorized_head(embeddings)
    if isinstance(embeddings, torch.nn.Embedding):
        head = torch.nn.Linear(embeddings.embedding_dim, embeddings.num_embeddings, bias=False, device="meta",
                               dtype=embeddings.weight.dtype)
        head.weight = embeddings.weight
        return head
    weight = getattr(embeddings, "weight", None)
    if not callable(weight):
        raise InputError(f"{type(embeddings).__module__}.{type(embeddings).__name__}: no weight table to build an "
                         "output head from, so this prompted classifier cannot generate")
    table = weight().dequantize()
    head = torch.nn.Linear(table.shape[1], table.shape[0], bias=False)
    with torch.no_grad():
        head.weight.copy_(table)
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated; plugins/quantization.py uses it too
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(torch.nn.Sequential(head), {torch.nn.Linear}, dtype=torch.qint8)[0]


def _factorized_head(embeddings: Any) -> Any:
    """The output head tied to a factorised table (``Embedding(V, r)`` then ``Linear(r, H)``, ALBERT's):
    the hidden state projected down to the table's rank (the projection's weights, transposed, shared),
    then scored against the ``V x r`` table (shared): two thin products instead of one ``V x H``."""
    import torch

    table, projection = embeddings[0], embeddings[1]
    weight = projection.weight() if callable(projection.weight) else projection.weight  # int8 dynamic: packed
    weight = weight.dequantize() if weight.is_quantized else weight
    down = torch.nn.Linear(weight.shape[0], weight.shape[1], bias=False, device="meta")
    down.weight = torch.nn.Parameter(weight.detach().t(), requires_grad=False)  # a view: no copy when float
    up = torch.nn.Linear(table.embedding_dim, table.num_embeddings, bias=False, device="meta")
    up.weight = table.weight
    return torch.nn.Sequential(down, up)


def label_token_ids(tokenizer: Any, words: list[str]) -> list[int]:
    """The first token of each label word; InputError when two words start with the same token
    (the model could not tell those classes apart)."""
    ids = []
    for word in words:
        tokens = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not tokens:
            raise InputError(f"--label-words: {word!r} is no token at all for this tokenizer")
        ids.append(tokens[0])
    if len(set(ids)) != len(ids):
        first = [tokenizer.convert_ids_to_tokens(i) for i in ids]
        raise InputError(f"--label-words {', '.join(map(repr, words))}: first tokens {first} repeat; "
                         "choose words whose first tokens differ")
    return ids


def render_data(data: TaskData, prompt: Prompt) -> TaskData:
    """The task with every text rendered through the prompt template (labels unchanged)."""
    def render(split: TextDataset) -> TextDataset:
        return TextDataset([prompt.render(text) for text in split.texts], list(split.labels))

    return replace(data, train=render(data.train), validation=render(data.validation), test=render(data.test))


def prompted_classifier(causal_lm: Any, tokenizer: Any, label_names: list[str], prompt: Prompt) -> Any:
    """``causal_lm`` as its family's sequence classifier over ``label_names``: same decoder, a score head
    whose rows are the LM head's rows of each label word's first token.

    The tokenizer gets a padding token (its end-of-sequence token when it has none) and truncates
    from the left, so a long text loses its beginning, never the prompt's last words the label
    follows; the model's ``pad_token_id`` is set to match, which is how the classifier finds each
    row's last real token.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    words = prompt.words(label_names)
    ids = label_token_ids(tokenizer, words)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.truncation_side = "left"
    config = causal_lm.config.__class__.from_dict(causal_lm.config.to_dict())
    config.num_labels = len(label_names)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: i for i, name in enumerate(label_names)}
    config.pad_token_id = tokenizer.pad_token_id
    config.use_cache = False  # a classifier reads one pass over the prompt; a KV cache would be built for nothing
    config.architectures = None
    setattr(config, CONFIG_ATTRIBUTE, prompt.as_dict(label_names))
    classifier = AutoModelForSequenceClassification.from_config(config, dtype=causal_lm.dtype)
    # The decoder's weights are copied, not its modules shared: every module of the classifier then
    # reads the classifier's own config, which techniques keep true (layer counts, layer types).
    decoder = getattr(causal_lm, causal_lm.base_model_prefix).state_dict()
    getattr(classifier, classifier.base_model_prefix).load_state_dict(decoder)
    head = getattr(classifier, "score", None)
    if not isinstance(head, torch.nn.Linear):
        raise InputError(f"{type(classifier).__name__} has no linear 'score' head to take the label words' rows")
    rows = causal_lm.get_output_embeddings().weight.detach()[torch.tensor(ids)]
    with torch.no_grad():
        head.weight.copy_(rows)
        if head.bias is not None:
            head.bias.zero_()
    return classifier.eval()


def zero_shot_teacher(causal_lm: Any, tokenizer: Any, data: TaskData, prompt: Prompt,
                      max_length: int) -> tuple[Any, TaskData, dict[str, Any]]:
    """The teacher a task makes of a causal LM: ``prompted_classifier`` over ``data``'s labels, ``data``
    rendered through the prompt, and the teacher's record for ``TaskInfo.teacher_training`` (recipe,
    prompt, zero-shot validation accuracy, majority-class accuracy)."""
    from autocompress.teacher import majority_class_accuracy
    from autocompress.training import accuracy, encode

    teacher = prompted_classifier(causal_lm, tokenizer, data.label_names, prompt)
    rendered = render_data(data, prompt)
    record = {"recipe": "zero-shot prompted classification (no fine-tuning)",
              "prompt": prompt.as_dict(data.label_names),
              "validation_accuracy": accuracy(teacher, encode(tokenizer, rendered.validation, max_length)),
              "majority_class_accuracy": majority_class_accuracy(data)}
    return teacher, rendered, record
