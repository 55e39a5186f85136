"""Built-in architecture adapters: BERT-style encoders, DistilBERT and Llama-layout decoders."""

from autocompress import hookimpl
from autocompress.arch import BertAdapter, DistilBertAdapter, LlamaAdapter


@hookimpl
def autocompress_register_architectures(register):
    register.add(BertAdapter)
    register.add(DistilBertAdapter)
    register.add(LlamaAdapter)
