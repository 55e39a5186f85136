"""Third-party log lines that say nothing to a user of autocompress, dropped where we call the library.

Each is dropped by its logger and the start of its message, only around the call that provokes it,
so every other line of those libraries (and every warning) still reaches the terminal:

- ``TORCHVISION_MISSING``: torch's ONNX exporter logs "torchvision is not installed. Skipping
  torchvision::nms" (and three more ops) on every export; our graphs never use torchvision.
- ``LOSS_TYPE_NONE``: tracing a Hugging Face model reads every attribute of every submodule; for a
  submodule without a task head (``BertModel``) transformers then logs "`loss_type=None` was set in
  the config but it is unrecognized": no loss is computed there at all.
- ``NEW_HEAD_LOAD_REPORT``: loading a base model with a task head to fine-tune the teacher from it,
  transformers logs a "LOAD REPORT" table listing the head's weights as MISSING ("newly initialized"):
  the head fine-tuning is about to train (weights of the wrong shape raise an error instead).
- ``TORCHAO_CUDA_EXTENSIONS`` and ``TORCHAO_ENUM_CONSTANT`` (dropped for good, from ``import
  autocompress`` on): importing torchao (transformers imports it on its own whenever it is installed,
  at some model load we do not choose) logs "Failed to load .../_C_mxfp8...so" for each of its
  CUDA-only extensions, and torch logs for each of its enums ("<enum 'KernelPreference'> ...") that
  it "is now natively supported by torch.compile". The int4 CPU kernel needs neither.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

#: (logger name, message start) pairs.
TORCHVISION_MISSING = ("torch.onnx._internal.exporter._registration", "torchvision is not installed. Skipping ")
LOSS_TYPE_NONE = ("transformers.modeling_utils", "`loss_type=None` was set in the config but it is unrecognized")
NEW_HEAD_LOAD_REPORT = ("transformers.modeling_utils", "\x1b[1m")  # the report starts with its bold class name
TORCHAO_CUDA_EXTENSIONS = ("torchao", "Failed to load ")
TORCHAO_ENUM_CONSTANT = ("torch.utils._pytree", "<enum '")


class _DropMessages(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


@contextmanager
def dropped(*messages: tuple[str, str]) -> Iterator[None]:
    """Inside: records of each (logger name, message start) in ``messages`` are dropped; that
    logger's other records pass as before. The filters are removed on the way out."""
    by_logger: dict[str, tuple[str, ...]] = {}
    for name, start in messages:
        by_logger[name] = (*by_logger.get(name, ()), start)
    with ExitStack() as stack:
        for name, starts in by_logger.items():
            logger, drop = logging.getLogger(name), _DropMessages(starts)
            logger.addFilter(drop)
            stack.callback(logger.removeFilter, drop)
        yield


def drop_for_good(*messages: tuple[str, str]) -> None:
    """Records of each (logger name, message start) are dropped from now on (once per logger and start)."""
    for name, start in messages:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and start in f.starts for f in logger.filters):
            logger.addFilter(_DropMessages((start,)))
