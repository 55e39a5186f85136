"""Test helpers for autocompress and its plugins: tiny models and the technique contract kit.

Third-party technique authors subclass ``TechniqueContract`` in their own tests::

    from autocompress.testing import TechniqueContract

    class TestMyTechnique(TechniqueContract):
        technique = MyTechnique
        mild_config = {"strength": 0.05}
        strong_config = {"strength": 0.5}
        bad_configs = [{"strength": -1}]

pytest then runs every contract check on tiny BERT and DistilBERT models built from configs.
``populate_hub_cache`` puts a local checkpoint into a Hugging Face cache in the Hub's layout, for
offline tests of Hub ids.
"""

from autocompress.testing.contract import TechniqueContract
from autocompress.testing.hub_cache import populate_hub_cache
from autocompress.testing.tiny import (
    synthetic_sentiment,
    tiny_model,
    tiny_tokenizer,
    write_tiny_checkpoint,
    write_tiny_task,
)

__all__ = ["TechniqueContract", "populate_hub_cache", "synthetic_sentiment", "tiny_model", "tiny_tokenizer",
           "write_tiny_checkpoint", "write_tiny_task"]
