"""Built-in architecture adapters: BERT-style encoders, DistilBERT, DeBERTa-v2/v3, MPNet, ModernBERT and
Llama-layout and GPT-2 decoders."""

from autocompress import hookimpl
from autocompress.arch import (
    BertAdapter,
    DebertaV2Adapter,
    DistilBertAdapter,
    GPT2Adapter,
    LlamaAdapter,
    ModernBertAdapter,
    MPNetAdapter,
)


@hookimpl
def autocompress_register_architectures(register):
    register.add(BertAdapter)
    register.add(DistilBertAdapter)
    register.add(DebertaV2Adapter)
    register.add(MPNetAdapter)
    register.add(ModernBertAdapter)
    register.add(LlamaAdapter)
    register.add(GPT2Adapter)
