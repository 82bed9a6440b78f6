"""All-or-nothing file writes: write a temporary file beside the target, then rename it into place."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` (same file system) for the block to write (a file or a directory);
    renamed onto ``path`` when the block ends without error, removed otherwise. Readers, and a job
    killed at any moment, see the old ``path`` or the whole new one, never half of it.

    ``suffix`` ends the temporary name (some writers choose the format from it, e.g. ".keras").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
