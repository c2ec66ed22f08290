"""Small file helpers for dataset artifacts: atomic writes and content hashes.

Datasets are read by other processes (a training run, an upload to OpenAI) while a new version
may be being written, so every file is written to a temp sibling and renamed into place: a reader
sees the old file or the new one, never half of one. The sha256 is what downstream steps use to
recognize "the same data" (e.g. not paying twice for an identical upload).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` through a temp file in the same folder and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def jsonl_bytes(records: Iterable[Any]) -> bytes:
    """One compact JSON object per line, UTF-8, Korean kept readable (no ASCII escapes)."""
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records).encode("utf-8")


def write_jsonl(path: Path, records: Iterable[Any]) -> str:
    """Write records as JSONL atomically; returns the file's sha256 (hex)."""
    data = jsonl_bytes(records)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file, read in chunks so large datasets do not need to fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_directory(path: Path, fill: Callable[[Path], None]) -> Path:
    """Create directory `path` by filling a temp sibling and renaming it into place.

    If `path` already exists it is kept as is (callers use content-addressed names, so an
    existing folder already holds the same data); a concurrent writer that loses the race just
    discards its copy.
    """
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        fill(tmp)
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
