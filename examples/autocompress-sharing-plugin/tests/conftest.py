# These tests import the installed plugin. autocompress's own `python -m pytest` collects them too
# (pytest testpaths); where the plugin is not installed they are left out, unless
# AUTOCOMPRESS_REQUIRE_EXAMPLE_PLUGIN=1 (CI), where a missing plugin must fail loudly.
import importlib.util
import os

if importlib.util.find_spec("autocompress_sharing_plugin") is None and not os.environ.get(
        "AUTOCOMPRESS_REQUIRE_EXAMPLE_PLUGIN"):
    collect_ignore_glob = ["test_*.py"]
