"""Built-in architecture adapters: BERT-style encoders and DistilBERT."""

from autocompress import hookimpl
from autocompress.arch import BertAdapter, DistilBertAdapter


@hookimpl
def autocompress_register_architectures(register):
    register.add(BertAdapter)
    register.add(DistilBertAdapter)
