"""Streaming atomic JSONL writes: same bytes as the one-shot form, sha256 on the way, no half files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.runtime.files import AtomicJsonlWriter, json_line, jsonl_bytes, write_jsonl

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(JSON_VALUES, max_size=1200))
def test_streamed_file_is_the_one_shot_bytes_and_its_sha(tmp_path_factory: pytest.TempPathFactory, records: list) -> None:
    path = tmp_path_factory.mktemp("w") / "x.jsonl"
    sha = write_jsonl(path, iter(records))  # a generator: nothing needs the whole list
    assert path.read_bytes() == jsonl_bytes(records)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in path.parent.iterdir()] == ["x.jsonl"]


def test_korean_is_kept_readable_and_lines_are_compact(tmp_path: Path) -> None:
    assert json_line({"role": "user", "content": "샴페인 축제 \"두 병\""}) == '{"role":"user","content":"샴페인 축제 \\"두 병\\""}'
    write_jsonl(tmp_path / "k.jsonl", [{"a": "가"}, {"b": 1}])
    assert (tmp_path / "k.jsonl").read_text(encoding="utf-8") == '{"a":"가"}\n{"b":1}\n'


def test_an_error_while_writing_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("old\n", encoding="utf-8")

    def records():
        yield {"ok": 1}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_jsonl(path, records())
    assert path.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]
    # leaving without commit is an abort too
    with AtomicJsonlWriter(path) as writer:
        writer.write_line('{"new":1}')
    assert path.read_text(encoding="utf-8") == "old\n" and writer.lines == 1
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text())
_json_value = st.recursive(
    _json_leaf, lambda inner: st.one_of(st.lists(inner), st.dictionaries(st.text(), inner)), max_leaves=25
)


@settings(max_examples=200, deadline=None)
@given(_json_value)
def test_json_line_is_byte_for_byte_what_json_dumps_writes(value: object) -> None:
    """orjson does the work, but the on-disk form stays the standard library's (dataset hashes)."""
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert json_line(value) == expected


def test_what_orjson_refuses_still_serializes() -> None:
    assert json_line({"big": 2**70, 1: "int key"}) == '{"big":1180591620717411303424,"1":"int key"}'
    assert json_line(["a\ud800"]) == json.dumps(["a\ud800"], ensure_ascii=False, separators=(",", ":"))
