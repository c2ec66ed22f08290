"""OpenAI chat fine-tuning files: format checks, token counts, default epochs and cost.

This is OpenAI's published data-preparation recipe ("Data preparation and analysis for chat model
fine-tuning", openai-cookbook) turned into functions that return numbers instead of printing them:
the same named format errors, the same token-count convention (3 tokens per message, 1 per name,
3 to prime the reply), the same default-epochs heuristic and billing estimate, so what we report
matches what the API will say about the file before anything is uploaded or paid.

One validator, `validate_range` (what `validate_jsonl` runs on a file and `shards.build_shard`
on a day's lines): blocks of lines in the usual shape ({"messages": [{"role", "content",
"weight"?}]}) are parsed by Arrow's JSON reader and checked and counted as columns, each distinct
string encoded once; any block it cannot vouch for goes through `validate_numbered`, the
cookbook's rules and per-message loop as published, line by line. `validate_jsonl_naive` runs
those rules on the whole file: the reference figure 2 benchmarks against and tests compare with.

Prices live in one table, `mrdabak_pipeline.core.cloud.spec.TRAINING_PRICE_PER_1M`; this module
only adds the per-example token limits, which are a property of the file, not of billing.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import tiktoken

from mrdabak_pipeline.core.cloud.spec import DEFAULT_BASE_MODEL, training_cost_usd
from mrdabak_pipeline.core.datasets.tokens import ResolvedEncoding, resolve_encoding, token_counter

DEFAULT_MODEL = DEFAULT_BASE_MODEL

# --- the cookbook's constants ------------------------------------------------------------------
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25

RECOGNIZED_KEYS = ("role", "content", "name", "function_call", "weight")
RECOGNIZED_ROLES = ("system", "user", "assistant", "function")

#: Longest training example (tokens) each base-model family accepts; longer ones are truncated.
#: Longest prefix wins; unknown models get the cookbook's 16,385.
MAX_TOKENS_PER_EXAMPLE: dict[str, int] = {
    "gpt-4o-mini": 65_536,
    "gpt-4o": 65_536,
    "gpt-4.1": 65_536,
    "gpt-3.5-turbo": 16_385,
    "gpt-35-turbo": 16_385,
}
DEFAULT_MAX_TOKENS_PER_EXAMPLE = 16_385

#: Every named format error, in the cookbook's order, plus the two a file (rather than a list of
#: already-parsed objects) can add: a line that is not JSON and a message that is not an object.
FORMAT_ERRORS: dict[str, str] = {
    "invalid_json": "the line is not valid JSON",
    "data_type": "the example is not a JSON object",
    "missing_messages_list": "no non-empty 'messages' list",
    "message_data_type": "a message is not a JSON object",
    "message_missing_key": "a message lacks 'role' or 'content'",
    "message_unrecognized_key": f"a message has a key other than {RECOGNIZED_KEYS}",
    "unrecognized_role": f"a message role is not one of {RECOGNIZED_ROLES}",
    "missing_content": "a message content is empty or not a string",
    "example_missing_assistant_message": "the example has no assistant message",
}
#: Not errors, but worth a look: the cookbook counts them separately.
WARNINGS: dict[str, str] = {
    "missing_system_message": "the example has no system message",
    "missing_user_message": "the example has no user message",
    "too_long": "the example exceeds the per-example token limit and would be truncated",
}

#: Parsed JSONL: (1-based line number, the object or `INVALID_JSON`).
INVALID_JSON = object()


def max_tokens_per_example(model: str) -> int:
    base = model.removeprefix("ft:").split(":")[0]
    matches = [k for k in MAX_TOKENS_PER_EXAMPLE if base.startswith(k)]
    return MAX_TOKENS_PER_EXAMPLE[max(matches, key=len)] if matches else DEFAULT_MAX_TOKENS_PER_EXAMPLE


#: What the validator reads: a JSONL file, or the bytes of whole lines (a shard's, in memory).
Source = str | Path | bytes


def _open(source: Source) -> io.BufferedIOBase:
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115 - the caller closes it


def _size(source: Source) -> int:
    return len(source) if isinstance(source, bytes) else os.path.getsize(source)


def iter_jsonl(path: Source, start: int = 0, end: int | None = None) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed object)`` for every line, streamed; a bad line is `INVALID_JSON`.

    Lines are what ``bytes.splitlines`` gives on the whole file (a lone ``\\r`` also ends a line),
    so line numbers agree with `read_jsonl` and with editors, without holding the file in memory.
    `start`/`end` read only the lines that start in that byte range (`start` must be 0 or just
    after a newline, see `line_ranges`); numbers then count from 1 within the range.
    """
    loads = orjson.loads  # the same objects as json.loads for valid JSON, several times faster
    lineno = 0
    pos = start
    with _open(path) as fh:
        fh.seek(start)
        for raw in fh:
            if end is not None and pos >= end:
                break
            pos += len(raw)
            parts = raw.splitlines() if b"\r" in raw else (raw[:-1] if raw.endswith(b"\n") else raw,)
            for line in parts:
                lineno += 1
                try:
                    yield lineno, loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):  # orjson's error subclasses the first
                    yield lineno, INVALID_JSON


def read_jsonl(path: str | Path) -> list[tuple[int, Any]]:
    """Every line of a JSONL file parsed; a line that does not parse becomes `INVALID_JSON`."""
    return list(iter_jsonl(path))


def inspect_example(example: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """(named format errors, countable messages) of one example, in one pass over its messages.

    The errors are the cookbook's checks (each code at most once, in `FORMAT_ERRORS` order); the
    messages are those that are objects, or none when the example's shape is broken.
    """
    if example is INVALID_JSON:
        return ["invalid_json"], []
    if not isinstance(example, dict):
        return ["data_type"], []
    messages = example.get("messages")
    if not isinstance(messages, list):
        return ["missing_messages_list"], []
    if not messages:
        return ["missing_messages_list"], []
    errors: set[str] = set()
    countable: list[dict[str, Any]] = []
    has_assistant = False
    for message in messages:
        if not isinstance(message, dict):
            errors.add("message_data_type")
            continue
        countable.append(message)
        if "role" not in message or "content" not in message:
            errors.add("message_missing_key")
        if not _KEYS.issuperset(message):
            errors.add("message_unrecognized_key")
        role = message.get("role")
        if role not in RECOGNIZED_ROLES:
            errors.add("unrecognized_role")
        elif role == "assistant":
            has_assistant = True
        content = message.get("content")
        if (not content and not message.get("function_call")) or not isinstance(content, str):
            errors.add("missing_content")
    if not has_assistant:
        errors.add("example_missing_assistant_message")
    return ([code for code in FORMAT_ERRORS if code in errors] if errors else []), countable


_KEYS = frozenset(RECOGNIZED_KEYS)


def format_errors(example: Any) -> list[str]:
    """The named format errors of one example (each code at most once), per the cookbook."""
    return inspect_example(example)[0]


def _messages(example: Any) -> list[dict[str, Any]]:
    """The countable messages of an example (none when its shape is broken)."""
    return inspect_example(example)[1]


def count_tokens_naive(examples: Sequence[Any], encoding: tiktoken.Encoding) -> tuple[list[int], list[int]]:
    """The cookbook's reference loop: (tokens, assistant tokens) per example, one encode per value.

    ``disallowed_special=()`` counts text like ``<|endoftext|>`` as ordinary text instead of
    raising, which is what the column-wise path (``encode_ordinary``) does too. An example with no
    readable message counts 0 (the cookbook would crash on it; the format errors report it).
    """
    totals: list[int] = []
    assistant: list[int] = []
    for example in examples:
        messages = _messages(example)
        n = 0
        for message in messages:
            n += TOKENS_PER_MESSAGE
            for key, value in message.items():
                if isinstance(value, str):
                    n += len(encoding.encode(value, disallowed_special=()))
                if key == "name":
                    n += TOKENS_PER_NAME
        totals.append(n + TOKENS_REPLY_PRIMING if messages else 0)
        assistant.append(
            sum(
                len(encoding.encode(m["content"], disallowed_special=()))
                for m in messages
                if m.get("role") == "assistant" and isinstance(m.get("content"), str)
            )
        )
    return totals, assistant


def token_lengths(texts: list[str], encoding: tiktoken.Encoding, num_threads: int | None = None) -> list[int]:
    """Token count of each text (``encode_ordinary`` semantics), on up to `num_threads` threads.

    Through `tokens.token_counter`: quicktok's exact C++ BPE where it agrees with `encoding`,
    tiktoken otherwise. Figure 2 of the benchmarks checks the counts against the cookbook loop.
    """
    return token_counter(encoding)(texts, num_threads or min(4, os.cpu_count() or 1))


#: Distinct strings whose token counts `TokenCache` keeps across chunks before it starts over.
TOKEN_CACHE_MAX_STRINGS = 100_000


class TokenCache(dict[str, int]):
    """Token counts of strings already encoded, shared by the chunks of one file.

    The system prompt is in every example and augmented variants repeat most turns, so across a
    file most strings have been seen before. Bounded: when it would pass `max_strings` it is
    emptied and refilled, so memory stays flat on any file (the system prompt is then encoded
    once more, which costs nothing next to a chunk).
    """

    def __init__(self, max_strings: int | None = None) -> None:
        super().__init__()
        self.max_strings = TOKEN_CACHE_MAX_STRINGS if max_strings is None else max_strings

    def add(self, distinct: list[str], encoding: tiktoken.Encoding, num_threads: int | None) -> None:
        """Encode whichever of `distinct` (no repeats) are not cached yet, in one batch."""
        new = [v for v in distinct if v not in self]
        if self and len(self) + len(new) > self.max_strings:
            self.clear()  # start over; these strings are all "new" again
            new = distinct
        if new:
            self.update(zip(new, token_lengths(new, encoding, num_threads), strict=True))


def distribution(values: Sequence[int | float]) -> dict[str, float]:
    """min / p5 / median / mean / p95 / max (zeros for an empty list, so metadata stays numeric)."""
    if not values:
        return dict.fromkeys(("min", "p5", "median", "mean", "p95", "max"), 0.0)
    arr = np.asarray(values, dtype=float)
    return {
        "min": float(arr.min()),
        "p5": float(np.percentile(arr, 5)),
        "median": float(np.median(arr)),
        "mean": round(float(arr.mean()), 2),
        "p95": float(np.percentile(arr, 95)),
        "max": float(arr.max()),
    }


@dataclass
class ValidationReport:
    """Everything the cookbook prints about one file, as data."""

    n_examples: int
    errors: Counter[str]
    error_lines: dict[str, list[int]]
    warnings: Counter[str]
    warning_lines: dict[str, list[int]]
    n_messages: list[int]
    n_tokens: list[int]
    n_assistant_tokens: list[int]
    max_tokens_per_example: int
    encoding: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def total_tokens(self) -> int:
        return int(sum(self.n_tokens))

    @property
    def billing_tokens(self) -> int:
        """Tokens billed per epoch: each example is capped at the per-example limit (truncated)."""
        return int(sum(min(self.max_tokens_per_example, n) for n in self.n_tokens))

    def distributions(self) -> dict[str, dict[str, float]]:
        return {
            "messages per example": distribution(self.n_messages),
            "tokens per example": distribution(self.n_tokens),
            "assistant tokens per example": distribution(self.n_assistant_tokens),
        }

    def summary(self) -> dict[str, Any]:
        """A JSON-able digest for asset values and metadata."""
        return {
            "n_examples": self.n_examples,
            "ok": self.ok,
            "format_errors": dict(self.errors),
            "format_error_lines": self.error_lines,
            "warnings": dict(self.warnings),
            "warning_lines": self.warning_lines,
            "total_tokens": self.total_tokens,
            "billing_tokens": self.billing_tokens,
            "max_tokens_per_example": self.max_tokens_per_example,
            "n_too_long": self.warnings.get("too_long", 0),
            "distributions": self.distributions(),
            "encoding": self.encoding,
        }


#: Examples parsed, checked and counted at a time by `validate_numbered`: the parsed objects of one
#: chunk are held, never the file's.
CHUNK_EXAMPLES = 8_192


def validate_examples(examples: Iterable[Any], model: str = DEFAULT_MODEL, *, encoding: ResolvedEncoding | None = None) -> ValidationReport:
    """Format checks + token counts for already-parsed examples (numbered from 1), by the cookbook's rules."""
    return validate_numbered(enumerate(examples, start=1), model, encoding=encoding)


def validate_numbered(
    pairs: Iterable[tuple[int, Any]],
    model: str = DEFAULT_MODEL,
    *,
    encoding: ResolvedEncoding | None = None,
    max_listed: int = 5,
    chunk_size: int = CHUNK_EXAMPLES,
) -> ValidationReport:
    """Format checks + token counts for ``(line number, parsed object)`` pairs, as `iter_jsonl` gives.

    Consumed in chunks of `chunk_size`, so a generator over a file of any size is validated in
    flat memory: only the per-example numbers (three ints each) are kept. Tokens are counted by
    the cookbook's loop (`count_tokens_naive`): this is the path for lines the column-wise one
    cannot vouch for, and the reference it is tested against.
    """
    resolved = encoding or resolve_encoding(model)
    n_messages: list[int] = []
    n_tokens: list[int] = []
    n_assistant: list[int] = []
    issues: list[Sequence[str]] = []
    iterator = iter(pairs)
    while chunk := [obj for _lineno, obj in itertools.islice(iterator, chunk_size)]:
        for obj in chunk:
            codes, messages = inspect_example(obj)
            roles = [m.get("role") for m in messages]  # a list: a broken role may be unhashable
            missing = ("missing_system_message",) * ("system" not in roles) + ("missing_user_message",) * ("user" not in roles)
            issues.append((*codes, *missing) if codes or missing else ())
            n_messages.append(len(messages))
        tokens, assistant = count_tokens_naive(chunk, resolved.encoding)
        n_tokens.extend(tokens)
        n_assistant.extend(assistant)
    return report_of_examples(n_messages, n_tokens, n_assistant, issues, model, resolved.metadata(), max_listed)


def line_ranges(path: Source, parts: int, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """``[start, end)`` (default: the whole file) as about `parts` byte ranges, each starting at a
    line start (`start` must be one)."""
    end = _size(path) if end is None else end
    starts = {start}
    with _open(path) as fh:
        for i in range(1, parts):
            fh.seek(start + (end - start) * i // parts)
            fh.readline()  # finish the line the cut fell into
            if fh.tell() < end:
                starts.add(fh.tell())
    bounds = [*sorted(starts), end]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def merge_reports(parts: Sequence[ValidationReport], max_listed: int = 5) -> ValidationReport:
    """One report from the reports of consecutive line ranges of a file (line numbers shifted)."""
    if not parts:
        raise ValueError("no reports to merge")
    errors: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    error_lines: dict[str, list[int]] = {}
    warning_lines: dict[str, list[int]] = {}
    offset = 0
    for part in parts:
        errors.update(part.errors)
        warnings.update(part.warnings)
        for mine, theirs in ((error_lines, part.error_lines), (warning_lines, part.warning_lines)):
            for code, lines in theirs.items():
                listed = mine.setdefault(code, [])
                listed.extend(n + offset for n in lines[: max(0, max_listed - len(listed))])
        offset += part.n_examples
    return ValidationReport(
        n_examples=offset, errors=errors, error_lines=error_lines, warnings=warnings, warning_lines=warning_lines,
        n_messages=[n for p in parts for n in p.n_messages], n_tokens=[n for p in parts for n in p.n_tokens],
        n_assistant_tokens=[n for p in parts for n in p.n_assistant_tokens],
        max_tokens_per_example=parts[0].max_tokens_per_example, encoding=parts[0].encoding,
    )


# --- the column-wise path for files in the usual shape ------------------------------------------
#
# A file this project writes (and most files anyone writes) is one {"messages": [{"role",
# "content", "weight"?}]} object per line. Arrow's JSON reader parses such lines straight into
# columns in C++, and the checks and token sums are then column operations; only the distinct
# strings meet the tokenizer. Whatever Arrow cannot vouch for goes to the exact per-line path:
# a parse error (unknown keys, other types, duplicate keys: the reader refuses them all), a line
# that is not one object, or any example with a format error, so every report the cookbook
# rules produce is produced by `validate_numbered` itself.

_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string()), ("weight", pa.int64())])
_CANONICAL = pa.schema([("messages", pa.list_(_MESSAGE))])
#: Bytes of whole lines handed to the reader at a time: what it holds, not the file.
ARROW_BLOCK_BYTES = 16 * 2**20


def _arrow_examples(data: bytes) -> pa.ListArray | None:
    """The messages of each line of `data` (whole lines), or None when a line may not be exactly
    one canonical object: every line must start with ``{`` and end with ``}`` (no blank line, no
    CR), and the reader must find as many objects as there are lines."""
    body = data[:-1] if data.endswith(b"\n") else data
    if not body or b"\r" in body or body[:1] != b"{" or body[-1:] != b"}":
        return None
    raw = np.frombuffer(body, dtype=np.uint8)
    newlines = np.flatnonzero(raw == 10)
    if len(newlines) and ((raw[newlines - 1] != ord("}")).any() or (raw[newlines + 1] != ord("{")).any()):
        return None
    n_lines = len(newlines) + 1
    try:
        table = pa_json.read_json(
            pa.BufferReader(data),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=pa_json.ParseOptions(explicit_schema=_CANONICAL, unexpected_field_behavior="error"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != n_lines:
        return None
    return table.column("messages").combine_chunks()


def _arrow_report(
    messages: pa.ListArray, encoding: ResolvedEncoding, limit: int, cache: TokenCache, num_threads: int | None, max_listed: int = 5
) -> ValidationReport | None:
    """`validate_numbered`'s report for lines without a format error; None if one has any."""
    if messages.null_count or (len(messages) and pc.min(pc.list_value_length(messages)).as_py() == 0):
        return None  # no messages list, or an empty one
    flat = messages.flatten()
    roles, contents = flat.field("role"), flat.field("content")
    if flat.null_count or roles.null_count or contents.null_count:
        return None  # a message that is null or lacks role or content
    if not pc.all(pc.is_in(roles, value_set=pa.array(RECOGNIZED_ROLES))).as_py() or pc.any(pc.equal(pc.binary_length(contents), 0)).as_py():
        return None
    n_messages = pc.list_value_length(messages).to_numpy(zero_copy_only=False).astype(np.int64)
    example_of = np.repeat(np.arange(len(messages)), n_messages)

    def per_example(mask: np.ndarray) -> np.ndarray:
        return np.bincount(example_of[mask], minlength=len(messages))

    role_codes = {r: pc.equal(roles, r).to_numpy(zero_copy_only=False) for r in ("system", "user", "assistant")}
    if (per_example(role_codes["assistant"]) == 0).any():
        return None  # example_missing_assistant_message
    content_tokens = _string_tokens(contents, encoding, cache, num_threads)
    tokens = content_tokens + _string_tokens(roles, encoding, cache, num_threads)
    totals = TOKENS_REPLY_PRIMING + TOKENS_PER_MESSAGE * n_messages + np.bincount(example_of, weights=tokens, minlength=len(messages)).astype(np.int64)
    assistant = np.bincount(example_of, weights=np.where(role_codes["assistant"], content_tokens, 0), minlength=len(messages)).astype(np.int64)
    warnings: Counter[str] = Counter()
    warning_lines: dict[str, list[int]] = {}
    for code, where in (("missing_system_message", per_example(role_codes["system"]) == 0),
                        ("missing_user_message", per_example(role_codes["user"]) == 0),
                        ("too_long", totals > limit)):
        lines = np.flatnonzero(where)
        if len(lines):
            warnings[code] = len(lines)
            warning_lines[code] = (lines[:max_listed] + 1).tolist()
    return ValidationReport(
        n_examples=len(messages), errors=Counter(), error_lines={}, warnings=warnings, warning_lines=warning_lines,
        n_messages=n_messages.tolist(), n_tokens=totals.tolist(), n_assistant_tokens=assistant.tolist(),
        max_tokens_per_example=limit, encoding=encoding.metadata(),
    )


def _string_tokens(values: pa.Array, encoding: ResolvedEncoding, cache: TokenCache, num_threads: int | None) -> np.ndarray:
    """Token count of each string, each distinct string encoded once (and once per `cache`)."""
    enc = values.dictionary_encode()
    distinct = enc.dictionary.to_pylist()
    cache.add(distinct, encoding.encoding, num_threads)
    counts = np.array([cache[v] for v in distinct], dtype=np.int64)
    return counts[enc.indices.to_numpy(zero_copy_only=False)]


def validate_range(
    path: Source, start: int = 0, end: int | None = None, model: str = DEFAULT_MODEL,
    encoding: ResolvedEncoding | None = None, num_threads: int | None = None, max_listed: int = 5,
) -> ValidationReport:
    """`validate_numbered` of the lines in a byte range of a file or of bytes (`iter_jsonl` semantics).

    Blocks of lines in the canonical shape with no format error are checked and counted
    column-wise; any other block goes through `validate_numbered` line by line: the report is
    the same either way (tested), only the time differs.
    """
    resolved = encoding or resolve_encoding(model)
    limit = max_tokens_per_example(model)
    end = _size(path) if end is None else end
    cache = TokenCache()
    parts = []
    with _open(path) as fh:
        for a, b in line_ranges(path, -(-(end - start) // ARROW_BLOCK_BYTES), start, end):
            fh.seek(a)
            messages = _arrow_examples(fh.read(b - a))
            report = _arrow_report(messages, resolved, limit, cache, num_threads, max_listed) if messages is not None else None
            if report is None:
                report = validate_numbered(iter_jsonl(path, a, b), model, encoding=resolved, max_listed=max_listed)
            parts.append(report)
    if not parts:
        return validate_numbered([], model, encoding=resolved)
    return merge_reports(parts, max_listed)


def validate_jsonl(
    path: str | Path, model: str = DEFAULT_MODEL, *, fast: bool = True, num_threads: int | None = None,
    encoding: ResolvedEncoding | None = None,
) -> ValidationReport:
    """Validate and count a JSONL file as it is on disk (what OpenAI will receive): `validate_range`
    over the whole file; ``fast=False`` is the cookbook's way (`validate_numbered` of every line)."""
    if not fast:
        return validate_numbered(read_jsonl(path), model, encoding=encoding)
    return validate_range(path, model=model, encoding=encoding, num_threads=num_threads)


def example_issues(report: ValidationReport) -> list[list[str]]:
    """Per example, the codes `report` noted on its line, ``too_long`` aside (it depends on the
    model's limit). `report` must list every line (made with ``max_listed=sys.maxsize``)."""
    issues: list[list[str]] = [[] for _ in range(report.n_examples)]
    for listed in (report.error_lines, report.warning_lines):
        for code, lines in listed.items():
            if code != "too_long":
                for n in lines:
                    issues[n - 1].append(code)
    return issues


def report_of_examples(
    n_messages: list[int], n_tokens: list[int], n_assistant_tokens: list[int], issues: Sequence[Sequence[str]],
    model: str, encoding: dict[str, Any], max_listed: int = 5,
) -> ValidationReport:
    """The report of a file from its examples' figures and `example_issues`, in line order: what
    `validate_jsonl` says of a file whose lines were validated before (a day's shard), without
    reading or encoding them again."""
    limit = max_tokens_per_example(model)
    errors: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    error_lines: dict[str, list[int]] = {}
    warning_lines: dict[str, list[int]] = {}
    noted = [(lineno, code) for lineno, codes in enumerate(issues, start=1) for code in codes]
    noted += [(lineno, "too_long") for lineno, n in enumerate(n_tokens, start=1) if n > limit]
    for lineno, code in sorted(noted):
        counter, listed = (errors, error_lines) if code in FORMAT_ERRORS else (warnings, warning_lines)
        counter[code] += 1
        if len(lines := listed.setdefault(code, [])) < max_listed:
            lines.append(lineno)
    return ValidationReport(
        n_examples=len(n_tokens), errors=errors, error_lines=error_lines, warnings=warnings, warning_lines=warning_lines,
        n_messages=n_messages, n_tokens=n_tokens, n_assistant_tokens=n_assistant_tokens,
        max_tokens_per_example=limit, encoding=encoding,
    )


def validate_jsonl_naive(path: str | Path, model: str = DEFAULT_MODEL, encoding: ResolvedEncoding | None = None) -> ValidationReport:
    """The reference implementation: the cookbook's straightforward per-message loop."""
    return validate_jsonl(path, model, fast=False, encoding=encoding)


def check_jsonl_format(path: str | Path) -> tuple[int, Counter[str], dict[str, list[int]]]:
    """Only the format checks (no tokenizer): (examples, error counts, first lines per error), streamed."""
    errors: Counter[str] = Counter()
    lines: dict[str, list[int]] = {}
    n = 0
    for lineno, obj in iter_jsonl(path):
        n += 1
        for code in format_errors(obj):
            errors[code] += 1
            if len(lines.setdefault(code, [])) < 5:
                lines[code].append(lineno)
    return n, errors, lines


# --- epochs and cost ---------------------------------------------------------------------------


def default_epochs(n_train_examples: int) -> int:
    """The API's default: 3 epochs, adjusted so example-epochs stay within 100..25,000 (1..25 epochs)."""
    if n_train_examples <= 0:
        return 0
    n_epochs = TARGET_EPOCHS
    if n_train_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        n_epochs = min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_train_examples)
    elif n_train_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        n_epochs = max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_train_examples)
    return n_epochs


@dataclass(frozen=True)
class CostEstimate:
    model: str
    n_epochs: int
    billing_tokens_per_epoch: int
    billed_tokens: int
    usd_per_1m_tokens: float | None
    estimated_cost_usd: float | None  # None when the model has no known price

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_cost(train: ValidationReport, model: str = DEFAULT_MODEL, n_epochs: int | None = None) -> CostEstimate:
    """Billed tokens (capped per example) x epochs x the model's training price.

    Only the training file is billed; validation examples are not trained on.
    """
    epochs = default_epochs(train.n_examples) if n_epochs is None else n_epochs
    billed = train.billing_tokens * epochs
    return CostEstimate(
        model=model,
        n_epochs=epochs,
        billing_tokens_per_epoch=train.billing_tokens,
        billed_tokens=billed,
        usd_per_1m_tokens=training_cost_usd(model, 1_000_000),
        estimated_cost_usd=training_cost_usd(model, billed),
    )


#: The figures of one distribution row, in reading order.
DISTRIBUTION_STATS = ("min", "p5", "median", "mean", "p95", "max")


def distribution_rows(splits: Iterable[tuple[str, dict[str, dict[str, float]]]]) -> list[dict[str, Any]]:
    """One record per split and measure from ``(split, ValidationReport.distributions())`` pairs.

    Records, not Markdown: the Dagster shell shows them as a typed table (numbers stay numbers).
    """
    return [
        {"split": split, "per_example": name, **{c: float(dist[c]) for c in DISTRIBUTION_STATS}}
        for split, dists in splits
        for name, dist in dists.items()
    ]
