"""The stored study of a search: its run directory, its trial record, its limits and results.

Written by ``autocompress.search``; read by ``autocompress.report``, the export and the CLI. It
imports neither of them, so ``search -> report -> study`` has no way back: the report reads the
stored study only.
"""
