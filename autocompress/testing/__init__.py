"""Test helpers for autocompress and its plugins: tiny models and the technique contract kit.

Third-party technique authors subclass ``TechniqueContract`` in their own tests::

    from autocompress.testing import TechniqueContract

    class TestMyTechnique(TechniqueContract):
        technique = MyTechnique
        mild_config = {"strength": 0.05}
        strong_config = {"strength": 0.5}
        bad_configs = [{"strength": -1}]

pytest then runs every contract check on tiny BERT and DistilBERT models built from configs.
``TargetContract`` does the same for targets (``autocompress.testing.target_contract``).
"""

from autocompress.testing.contract import TechniqueContract
from autocompress.testing.target_contract import TargetContract
from autocompress.testing.tiny import (
    synthetic_sentiment,
    tiny_model,
    tiny_tokenizer,
    write_tiny_checkpoint,
    write_tiny_task,
)

__all__ = ["TargetContract", "TechniqueContract", "synthetic_sentiment", "tiny_model", "tiny_tokenizer",
           "write_tiny_checkpoint", "write_tiny_task"]
