"""Files that appear whole or not at all: written aside in the same folder, then renamed.

A reader (a resumed run, a second cache reader, the node loading a checkpoint) never sees a
half-written file, and an interrupted writer leaves at most a hidden `.NAME.*.tmp` beside it,
which nothing picks up. The temporary name is unique (`mkstemp`), so concurrent writers of the
same file do not collide: the last rename wins with a complete file. The file gets the mode
an ordinary `open(path, "w")` would give it (0666 less the umask), not mkstemp's private
0600: a checkpoint installed for other users must stay readable by them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# read once, at import: setting it back and forth later could race with other threads' files
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Create or replace `path` with what `write(temporary path)` writes there, atomically;
    on any error the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))
