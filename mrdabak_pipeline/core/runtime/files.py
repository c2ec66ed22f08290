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

import orjson


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """Let `write` fill a temp file (given its path) in the same folder, then `os.replace` it.

    The callback form serves writers that want a path of their own (``pq.write_table``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` through a temp file in the same folder and `os.replace`."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def json_line(record: Any) -> str:
    """One record as a compact JSON line (no newline), UTF-8 friendly (Korean kept, no ASCII escapes).

    The single definition of the on-disk form: the dataset writer, its dedup key and `jsonl_bytes`
    all use it, so "the same example" and "the same bytes" never disagree. orjson writes the same
    bytes as ``json.dumps(ensure_ascii=False, separators=(",", ":"))`` for strings, integers,
    booleans, null, lists and dicts (a property test holds it to that) at several times the speed;
    what orjson refuses (a lone surrogate, a non-string key, an int over 64 bits) goes to
    ``json.dumps``.
    """
    try:
        return orjson.dumps(record).decode("utf-8")
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def json_bytes(record: Any) -> bytes:
    """`json_line` as the UTF-8 bytes that go on disk (no str round trip on the hot path)."""
    try:
        return orjson.dumps(record)
    except (orjson.JSONEncodeError, TypeError):
        return json_line(record).encode("utf-8")


def jsonl_bytes(records: Iterable[Any]) -> bytes:
    """One compact JSON object per line, UTF-8, Korean kept readable (no ASCII escapes)."""
    return "".join(json_line(r) + "\n" for r in records).encode("utf-8")


class AtomicJsonlWriter:
    """Stream JSONL lines into a temp sibling of `path`; `commit` renames it into place.

    Why streaming: a dataset of 100k conversations is close to a gigabyte of text, and building it
    as one string, then one bytes copy, held several times the file in memory. Lines are encoded
    once, hashed (sha256) and written in batches, so memory stays flat and the digest costs no
    second read. Leaving the ``with`` block without `commit` (an error, or nothing worth keeping)
    removes the temp file and leaves any previous `path` untouched.
    """

    def __init__(self, path: Path, batch_lines: int = 512) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb", buffering=1 << 20)
        self._digest = hashlib.sha256()
        self._pending: list[bytes] = []
        self._batch = batch_lines
        self.lines = 0
        self.committed: str | None = None

    def write_line(self, line: str | bytes) -> None:
        """Append one JSON line (without its newline), as text or as its UTF-8 bytes."""
        self._pending.append(line.encode("utf-8") if isinstance(line, str) else line)
        self.lines += 1
        if len(self._pending) >= self._batch:
            self._flush()

    def write(self, record: Any) -> None:
        self.write_line(json_bytes(record))

    def write_block(self, data: bytes | memoryview) -> None:
        """Append complete lines at once (each already ending in a newline)."""
        self._flush()
        self._digest.update(data)
        self._fh.write(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"\n".join(self._pending) + b"\n"
            self._pending.clear()
            self._digest.update(data)
            self._fh.write(data)

    def commit(self) -> str:
        """Flush, rename into place, return the file's sha256 (hex)."""
        self._flush()
        self._fh.close()
        os.replace(self._tmp, self.path)
        self.committed = self._digest.hexdigest()
        return self.committed

    def abort(self) -> None:
        """Drop what was written; `path` keeps its previous content (if any)."""
        if self.committed is None:
            self._fh.close()
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicJsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def write_jsonl(path: Path, records: Iterable[Any]) -> str:
    """Write records as JSONL atomically, streaming; returns the file's sha256 (hex)."""
    with AtomicJsonlWriter(path) as writer:
        for record in records:
            writer.write(record)
        return writer.commit()


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
