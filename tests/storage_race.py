"""Open one fresh database from several processes at the same instant (tests' helper)."""

import subprocess
import sys
from pathlib import Path

# Each child imports everything first, says it is ready, and opens the storage only once every
# child is ready: the openings start within a millisecond or two, as when workers start together.
CHILD = """
import sys, time
from pathlib import Path
from autocompress.errors import InputError
from autocompress.study.storage import open_storage
url, gate, me, count = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
(gate / me).touch()
while len(list(gate.iterdir())) < count:
    time.sleep(0.0005)
try:
    open_storage(url, heartbeat_s=30.0)
    print("opened")
except InputError as exc:
    print(exc)
"""


def open_at_once(url: str, gate: Path, count: int = 4) -> list[str]:
    """What each of ``count`` processes printed after opening ``url`` together."""
    gate.mkdir(parents=True)
    children = [subprocess.Popen([sys.executable, "-c", CHILD, url, str(gate), str(i), str(count)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in range(count)]
    printed = []
    for child in children:
        out, err = child.communicate()  # each opens the storage and ends: no clock needed
        assert child.returncode == 0, err[-2000:]
        printed.append(out.strip())
    return printed
