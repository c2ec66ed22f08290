"""OpenAI chat-format checks, token counts, epochs and cost (the cookbook recipe as functions)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.datasets import validation as V
from mrdabak_pipeline.core.datasets.build import write_openai_dataset
from mrdabak_pipeline.core.datasets.chat_format import session_to_example
from mrdabak_pipeline.core.datasets.tokens import resolve_encoding
from mrdabak_pipeline_tests.dataset_helpers import order_session

SYSTEM = {"role": "system", "content": "당신은 상담원입니다."}
USER = {"role": "user", "content": "프렌치 디너 하나요"}
ASSISTANT = {"role": "assistant", "content": '{"message":"네","orderState":{}}'}

#: One planted bad line per named error.
PLANTED: dict[str, str] = {
    "invalid_json": '{"messages": [',
    "data_type": json.dumps([SYSTEM, USER, ASSISTANT]),
    "missing_messages_list": json.dumps({"prompt": "x"}),
    "message_data_type": json.dumps({"messages": [SYSTEM, "hello", ASSISTANT]}),
    "message_missing_key": json.dumps({"messages": [SYSTEM, {"role": "user"}, ASSISTANT]}),
    "message_unrecognized_key": json.dumps({"messages": [SYSTEM, {**USER, "order_state": {}}, ASSISTANT]}),
    "unrecognized_role": json.dumps({"messages": [SYSTEM, {"role": "customer", "content": "안녕"}, ASSISTANT]}),
    "missing_content": json.dumps({"messages": [SYSTEM, USER, {"role": "assistant", "content": ""}]}),
    "example_missing_assistant_message": json.dumps({"messages": [SYSTEM, USER]}),
}


def test_every_named_error_is_planted_once() -> None:
    assert set(PLANTED) == set(V.FORMAT_ERRORS)


@pytest.mark.parametrize("code", list(PLANTED))
def test_planted_bad_example_produces_its_named_error(tmp_path: Path, code: str) -> None:
    good = json.dumps({"messages": [SYSTEM, USER, ASSISTANT]}, ensure_ascii=False)
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n{PLANTED[code]}\n{good}\n", encoding="utf-8")
    report = V.validate_jsonl(path)
    assert not report.ok
    assert report.errors[code] == 1
    assert report.error_lines[code] == [2]
    n, errors, lines = V.check_jsonl_format(path)
    assert n == 3 and errors == report.errors and lines == report.error_lines


def test_clean_example_has_no_errors_and_warnings_for_missing_system_and_user() -> None:
    report = V.validate_examples([{"messages": [SYSTEM, USER, ASSISTANT]}, {"messages": [ASSISTANT]}])
    assert report.ok
    assert report.warnings == {"missing_system_message": 1, "missing_user_message": 1}
    assert report.warning_lines["missing_user_message"] == [2]


def test_token_count_follows_the_cookbook_convention() -> None:
    enc = resolve_encoding(V.DEFAULT_MODEL).encoding
    example = {"messages": [USER, {**ASSISTANT, "name": "bot"}]}
    expected = (
        3 + len(enc.encode("user")) + len(enc.encode(USER["content"]))
        + 3 + len(enc.encode("assistant")) + len(enc.encode(ASSISTANT["content"])) + len(enc.encode("bot")) + 1
        + 3
    )
    report = V.validate_examples([example])
    assert report.n_tokens == [expected]
    assert report.n_assistant_tokens == [len(enc.encode(ASSISTANT["content"]))]
    assert report.n_messages == [2]


def test_fast_and_naive_counts_are_identical(tmp_path: Path) -> None:
    sessions = [order_session(f"s{i}", name=f"고객{i % 7}") for i in range(40)]
    examples = [session_to_example(s) for s in sessions]
    examples.append({"messages": [SYSTEM, {"role": "user", "content": "<|endoftext|> 특수 토큰 글자", "name": "kim"}, ASSISTANT]})
    examples.append({"messages": [SYSTEM, USER, {**ASSISTANT, "weight": 0}, ASSISTANT]})
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples) + "not json\n", encoding="utf-8")
    fast = V.validate_jsonl(path, num_threads=2)
    naive = V.validate_jsonl_naive(path)
    assert fast.n_tokens == naive.n_tokens and fast.n_assistant_tokens == naive.n_assistant_tokens
    assert fast.summary() == naive.summary()
    assert fast.n_tokens[-1] == 0 and fast.errors == {"invalid_json": 1}
    # chunked threads give the same lengths as one thread
    enc = resolve_encoding(V.DEFAULT_MODEL).encoding
    texts = [f"텍스트 {i} " * (i % 5 + 1) for i in range(2500)]
    assert V.token_lengths(texts, enc, 3) == V.token_lengths(texts, enc, 1)


@pytest.mark.parametrize(
    ("n", "epochs"), [(0, 0), (1, 25), (3, 25), (10, 10), (33, 3), (34, 3), (5000, 3), (8334, 2), (10_000, 2), (30_000, 1)]
)
def test_default_epochs_matches_the_api_heuristic(n: int, epochs: int) -> None:
    assert V.default_epochs(n) == epochs


@given(st.integers(1, 200_000))
def test_default_epochs_stay_in_range(n: int) -> None:
    e = V.default_epochs(n)
    assert 1 <= e <= 25
    if n * 3 < 100:  # too few examples: as many epochs as fit in 100 example-epochs (at most 25)
        assert e == 25 or n * e <= 100 < n * (e + 1)
    elif n * 3 > 25_000:  # too many: as many as fit in 25,000 (at least 1)
        assert e == 1 or n * e <= 25_000 < n * (e + 1)
    else:
        assert e == 3


def test_too_long_examples_are_flagged_and_billing_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(V.MAX_TOKENS_PER_EXAMPLE, "gpt-4o-mini", 40)
    long = {"messages": [SYSTEM, {"role": "user", "content": "디너 " * 60}, ASSISTANT]}
    short = {"messages": [USER, ASSISTANT]}
    report = V.validate_examples([short, long, short], "gpt-4o-mini-2024-07-18")
    assert report.ok  # too long is a warning: the API truncates
    assert report.warnings["too_long"] == 1 and report.warning_lines["too_long"] == [2]
    assert report.billing_tokens == report.n_tokens[0] + 40 + report.n_tokens[2]
    cost = V.estimate_cost(report, "gpt-4o-mini-2024-07-18")
    assert cost.n_epochs == 25  # 3 examples: the API raises the epochs
    assert cost.billed_tokens == report.billing_tokens * 25
    assert cost.estimated_cost_usd == pytest.approx(cost.billed_tokens * 3.00 / 1_000_000)
    assert V.estimate_cost(report, "unknown-model").estimated_cost_usd is None


def test_written_files_round_trip_through_the_checks(tmp_path: Path) -> None:
    sessions = [order_session(f"s{i}", name=f"고객{i}") for i in range(60)]
    value = V_value = write_openai_dataset(sessions, tmp_path, model="gpt-4o-mini-2024-07-18")
    assert value["format_ok"] and value["train_examples"] + value["validation_examples"] == 60
    for split in ("train", "validation"):
        path = Path(value[f"{split}_path"])
        assert hashlib.sha256(path.read_bytes()).hexdigest() == value[f"{split}_sha256"]
        report = V.validate_jsonl(path)
        assert report.ok and report.n_examples == value[f"{split}_examples"]
        assert report.summary() == V_value["reports"][split]
    assert value["estimated_cost_usd"] > 0 and value["encoding"]["exact"] is True
    rows = V.distribution_rows([("train", V.validate_jsonl(value["train_path"]).distributions())])
    assert [r["per_example"] for r in rows] == ["messages per example", "tokens per example", "assistant tokens per example"]
    assert all(r["split"] == "train" and r["min"] <= r["median"] <= r["max"] for r in rows)


LINE_PIECES = st.sampled_from([b"\n", b"\r", b"\r\n", b"", b" ", b"{}", b'{"messages":[]}', b"[1]", b"x", "가".encode()])


@settings(max_examples=150, deadline=None)
@given(st.lists(LINE_PIECES, max_size=30))
def test_streamed_lines_are_numbered_like_splitlines(tmp_path_factory: pytest.TempPathFactory, pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    path = tmp_path_factory.mktemp("j") / "x.jsonl"
    path.write_bytes(data)
    expected = []
    for i, line in enumerate(data.splitlines(), start=1):
        try:
            expected.append((i, json.loads(line)))
        except ValueError:
            expected.append((i, V.INVALID_JSON))
    assert list(V.iter_jsonl(path)) == expected == V.read_jsonl(path)


def test_chunking_does_not_change_any_figure() -> None:
    sessions = [order_session(f"s{i}", name=f"고객{i % 5}") for i in range(30)]
    examples: list = [session_to_example(s) for s in sessions]
    examples[7:7] = [{"messages": [USER, {**ASSISTANT, "name": "bot"}]}, "not an object", {"messages": [ASSISTANT]}]
    whole = V.validate_examples(examples)
    for chunk in (1, 2, 7, 1000):
        chunked = V.validate_numbered(enumerate(examples, start=1), chunk_size=chunk)
        assert chunked.summary() == whole.summary()
        assert (chunked.n_tokens, chunked.n_assistant_tokens, chunked.n_messages) == (whole.n_tokens, whole.n_assistant_tokens, whole.n_messages)


def test_validation_reads_the_file_written_not_the_examples_in_memory(tmp_path: Path) -> None:
    from mrdabak_pipeline.core.datasets.build import EmptyDatasetError, write_openai_dataset

    sessions = [order_session(f"s{i}", name=f"고객{i}") for i in range(40)]
    value = write_openai_dataset(sessions, tmp_path)
    assert value["train_examples"] + value["validation_examples"] == 40 and value["validation_sha256"] is not None
    train = Path(value["train_path"])
    assert hashlib.sha256(train.read_bytes()).hexdigest() == value["train_sha256"]
    report = V.validate_jsonl(train)
    assert report.ok and report.summary() == value["reports"]["train"]  # the shards' figures are the file's
    # a corrupted byte on disk is caught: the check is of the file, not of what we meant to write
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_bytes(train.read_bytes().replace(b'"role":"user"', b'"role":"customer"', 1))
    assert V.validate_jsonl(corrupt).errors == {"unrecognized_role": 1}
    corrupt.unlink()
    # no usable session: a clear error, the previous files stay as they were, no temp files left
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(EmptyDatasetError):
        write_openai_dataset([], tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    # an empty validation split removes the stale validation file
    value = write_openai_dataset(sessions, tmp_path, validation_fraction=0.0)
    assert value["validation_path"] is None and value["validation_examples"] == 0
    assert sorted(p.name for p in tmp_path.iterdir() if not p.is_dir()) == ["train.jsonl"]


_messy_value = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12), st.lists(st.text(max_size=3), max_size=2))
_messy_message = st.one_of(
    st.dictionaries(st.sampled_from(["role", "content", "name", "weight", "function_call", "extra"]), _messy_value, max_size=5),
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "bot"]), "content": st.text(max_size=20)}),
    _messy_value,
)
_messy_example = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(_messy_message, max_size=6)}),
    st.dictionaries(st.sampled_from(["messages", "other"]), _messy_value, max_size=2),
    _messy_value,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_messy_example, min_size=1, max_size=12))
def test_any_parsed_json_is_checked_without_crashing_and_counted_like_the_cookbook(examples: list) -> None:
    """Broken shapes (unhashable roles, non-dict messages, missing keys) get named errors, never an exception."""
    report = V.validate_examples(examples, encoding=resolve_encoding(V.DEFAULT_MODEL))
    assert report.n_examples == len(examples)
    for example in examples:
        assert set(V.format_errors(example)) <= set(V.FORMAT_ERRORS)


_canonical_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "function", "bot"]), "content": st.text(max_size=10)},
    optional={"weight": st.sampled_from([0, 1, "0", 0.5, None])},
)
_file_line = st.one_of(
    st.builds(lambda m: json.dumps({"messages": m}, ensure_ascii=False).encode(), st.lists(_canonical_message, max_size=4)),
    st.builds(lambda e: json.dumps(e, ensure_ascii=False).encode(), _messy_example),
    st.sampled_from([b"", b" ", b"{not json", b'{"messages":[]} {"messages":[]}', b'{"messages":[{"role":"user","role":"assistant","content":"x"}]}',
                     b'{"messages":[{"role":"user","content":"\\ud800"}]}', b"\xff\xfe", b'\xef\xbb\xbf{"messages":[]}']),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_file_line, max_size=14), st.sampled_from([b"\n", b"\r\n"]), st.booleans(), st.integers(40, 400))
def test_the_column_wise_file_check_reports_exactly_what_the_line_by_line_check_does(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], newline: bytes, trailing: bool, block: int
) -> None:
    """`validate_range` takes whole blocks of canonical lines column-wise (Arrow's JSON reader) and
    everything else line by line; whatever the mix, block size and line endings, the report is the
    line-by-line one."""
    path = tmp_path_factory.mktemp("v") / "x.jsonl"
    path.write_bytes(newline.join(lines) + (newline if trailing and lines else b""))
    enc = resolve_encoding(V.DEFAULT_MODEL)
    expected = V.validate_numbered(V.iter_jsonl(path), encoding=enc)
    for size in (block, 1 << 20):
        V.ARROW_BLOCK_BYTES = size
        try:
            got = V.validate_range(path, encoding=enc)
        finally:
            V.ARROW_BLOCK_BYTES = 16 * 2**20
        assert got.summary() == expected.summary()
        assert (got.n_tokens, got.n_assistant_tokens, got.n_messages) == (expected.n_tokens, expected.n_assistant_tokens, expected.n_messages)


def test_a_written_dataset_is_checked_column_wise_with_the_same_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mrdabak_pipeline.core.datasets.build import write_openai_dataset

    path = Path(write_openai_dataset([order_session(f"s{i}", name=f"고객{i}") for i in range(60)], tmp_path)["train_path"])
    expected = V.validate_numbered(V.iter_jsonl(path))
    monkeypatch.setattr(V, "validate_numbered", None)  # the line-by-line path must not be needed
    got = V.validate_range(path)
    assert got.summary() == expected.summary() and got.n_tokens == expected.n_tokens


def test_the_report_of_a_days_examples_is_the_report_of_the_file(tmp_path: Path) -> None:
    """What `shards.build_shard` keeps per line (figures and issues) adds up to `validate_jsonl`."""
    examples: list = [session_to_example(order_session(f"s{i}", name=f"고객{i}")) for i in range(12)]
    examples[3:3] = [{"messages": [USER, {**ASSISTANT, "name": "bot"}]}, "not an object", {"messages": [ASSISTANT]}] * 3
    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples), encoding="utf-8")
    expected = V.validate_jsonl(path, "gpt-3.5-turbo")
    full = V.validate_range(path.read_bytes(), model="gpt-3.5-turbo", max_listed=10**9)
    got = V.report_of_examples(full.n_messages, full.n_tokens, full.n_assistant_tokens, V.example_issues(full), "gpt-3.5-turbo", full.encoding)
    assert got.summary() == expected.summary() and got.n_tokens == expected.n_tokens
