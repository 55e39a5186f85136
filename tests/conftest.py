import os

# Tests see only the built-in plugins unless a test loads entry points on purpose.
os.environ.setdefault("AUTOCOMPRESS_DISABLE_PLUGIN_AUTOLOAD", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("AUTOCOMPRESS_FREE_FLOOR", "none")  # the floor converts the teacher per runtime: minutes of CI
