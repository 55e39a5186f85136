"""Test helpers for autocompress and its plugins: tiny models and the technique contract kit.

Third-party technique authors subclass ``TechniqueContract`` in their own tests::

    from autocompress.testing import TechniqueContract

    class TestMyTechnique(TechniqueContract):
        technique = MyTechnique
        mild_config = {"strength": 0.05}
        strong_config = {"strength": 0.5}
        bad_configs = [{"strength": -1}]

pytest then runs every contract check on tiny models of every family the built-in architecture
adapters claim (``FAMILIES``), built from configs. docs/plugins.md
("Testing with the contract kit") describes each check and attribute.
``TargetContract`` does the same for targets (``autocompress.testing.target_contract``).
``populate_hub_cache`` puts a local checkpoint into a Hugging Face cache in the Hub's layout, for
offline tests of Hub ids. ``fresh_process_outputs`` runs code in new interpreters, for reload checks.
"""

from autocompress.testing.contract import TechniqueContract
from autocompress.testing.fresh import fresh_process_outputs
from autocompress.testing.hub_cache import populate_hub_cache
from autocompress.testing.target_contract import TargetContract
from autocompress.testing.tiny import (
    DECODER_FAMILIES,
    FAMILIES,
    synthetic_sentiment,
    text_inputs,
    tiny_bpe_tokenizer,
    tiny_model,
    tiny_tokenizer,
    tiny_unigram_tokenizer,
    trained_tiny_model,
    varied_inputs,
    write_tiny_causal_lm,
    write_tiny_checkpoint,
    write_tiny_sentence_model,
    write_tiny_task,
)

__all__ = ["DECODER_FAMILIES", "FAMILIES", "TargetContract", "TechniqueContract", "fresh_process_outputs",
           "populate_hub_cache",
           "synthetic_sentiment", "text_inputs", "tiny_bpe_tokenizer", "tiny_model", "tiny_tokenizer",
           "tiny_unigram_tokenizer",
           "trained_tiny_model", "varied_inputs", "write_tiny_causal_lm", "write_tiny_checkpoint", "write_tiny_task",
           "write_tiny_sentence_model"]
