"""Raw message rows -> cleaned sessions, plus a quarantine that accounts for every raw row.

A raw partition (``db.RAW_SCHEMA``, one row per message) is grouped by session id. Each session
either becomes one cleaned `Session` or one rejection row with a machine-readable reason; nothing
in between. Row-level repairs inside a kept session (an empty message dropped, a retry collapsed,
an unparseable order_state dropped from its turn) are counted by reason, so that

    raw rows == kept turns + dropped messages + collapsed duplicates + rejected rows

holds for every partition (`CleaningResult.row_balance`), and the shell turns it into a check.
Pure Python over Arrow input: no Dagster.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mrdabak_pipeline.core.domain import (
    REQUIRED_ORDER_FIELDS,
    DinnerType,
    OrderStateError,
    ServingStyle,
    Session,
    SessionStatus,
    Turn,
    normalize_order_state,
)
from mrdabak_pipeline.core.runtime.bulk import paused_gc

# --- Reasons (stable strings: dashboards and checks group by them) ---------------------------

MISSING_SESSION_ID = "missing_session_id"
ORPHAN_MESSAGES = "orphan_messages"
UNDECODABLE_ROW = "undecodable_row"
EMPTY_SESSION = "empty_session"
UNKNOWN_ROLE = "unknown_role"
MESSAGE_TOO_LONG = "message_too_long"
NO_EXCHANGE = "no_exchange"
REJECTION_REASONS: tuple[str, ...] = (
    MISSING_SESSION_ID,
    ORPHAN_MESSAGES,
    UNDECODABLE_ROW,
    EMPTY_SESSION,
    UNKNOWN_ROLE,
    MESSAGE_TOO_LONG,
    NO_EXCHANGE,
)
#: Message-level repairs inside a kept session.
EMPTY_CONTENT = "empty_content"
NULL_MESSAGE_ROW = "null_message_row"
CONSECUTIVE_DUPLICATE = "consecutive_duplicate"

REJECTED_SCHEMA = pa.schema(
    {"session_id": pa.string(), "partition_date": pa.string(), "reason": pa.string(), "detail": pa.string(),
     "n_rows": pa.int64()}
)

#: Every spelling of a role the app (or its predecessors) ever wrote, lower-cased.
ROLE_ALIASES: dict[str, str] = {
    **dict.fromkeys(("user", "customer", "human", "client", "고객"), "user"),
    **dict.fromkeys(("assistant", "bot", "ai", "agent", "model", "상담원"), "assistant"),
}


# --- Text normalization -----------------------------------------------------------------------

#: Full-width ASCII (０-９, Ａ-Ｚ, ＠, ＋, －, …) -> ASCII, the part of NFKC we want. Full NFKC is
#: NOT applied: it would turn compatibility jamo (ㅋㅋ, ㅇㅇ) into conjoining jamo.
_TRANSLATE: dict[int, int | None] = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}
_TRANSLATE.update(dict.fromkeys((0xFEFF, 0x200B, 0x200C, 0x200D, 0x2060, 0x00AD), None))  # BOM, zero-width, soft hyphen
_TRANSLATE.update(dict.fromkeys((0x00A0, 0x202F, 0x2007, 0x3000, 0x0009, 0x000B, 0x000C), 0x20))  # NBSP & co -> space
_TRANSLATE[0x2028] = 0x0A
_TRANSLATE[0x2029] = 0x0A
_CRLF = re.compile(r"\r\n?")
#: Anything `normalize_text` would change; most messages have none and skip the work (hot path).
_DIRTY = re.compile(
    "[\r\n\t\x0b\x0c\u00a0\u00ad\u2007\u200b-\u200d\u2028\u2029\u202f\u2060\u3000\ufeff\uff01-\uff5e"
    "\u0300-\u036f\u1100-\u11ff\u3099\u309a]|  |^\\s|\\s$"
)
_H_SPACE = re.compile(r" {2,}")
_SPACE_AROUND_NL = re.compile(r" *\n *")
_MANY_NL = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """NFC, no BOM/zero-width chars, NBSP -> space, CRLF -> LF, full-width ASCII -> ASCII, trimmed.

    Runs of spaces collapse to one and at most one blank line is kept: speech-to-text output has
    no meaningful layout, and identical utterances must compare equal for duplicate detection.
    """
    if not _DIRTY.search(text):
        return text
    if "\r" in text:
        text = _CRLF.sub("\n", text)
    text = text.translate(_TRANSLATE)
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if "  " in text:
        text = _H_SPACE.sub(" ", text)
    if "\n" in text:
        text = _MANY_NL.sub("\n\n", _SPACE_AROUND_NL.sub("\n", text))
    return text.strip()


def normalize_role(role: str | None) -> str | None:
    """`user`/`assistant` for every known spelling ('USER', 'Customer', 'bot', …), else None."""
    if role is None:
        return None
    return ROLE_ALIASES.get(role.strip().lower())


# --- Scenario tags (what the data-quality checklist counts) ------------------------------------

_GREETING = re.compile(r"안녕하세요|환영합니다|반갑습니다|미스터 대박")
_OUT_OF_DOMAIN = re.compile(r"주문만 도와|도와드릴 수 없|답변(?:을)? (?:드리기|드릴 수) (?:어렵|없)|관련된 질문만")
_UNCLEAR = re.compile(r"이해하지 못했|다시 말씀해")
_CHAMPAGNE_FIX = re.compile(r"샴페인[^.?!]*(?:그랜드|디럭스|GRAND|DELUXE)[^.?!]*만")
#: Tags that mark an error-handling example (the guide's "오류 처리 예제").
ERROR_HANDLING_TAGS: frozenset[str] = frozenset({"out_of_domain", "unclear_input", "champagne_simple_correction"})


def scenario_tags(turns: list[Turn]) -> list[str]:
    """Heuristic scenario labels from the assistant's wording and the order states.

    - ``greeting``: the first assistant turn greets; ``complete_flow``: greeting, and some
      assistant state has every required field with ``readyForConfirmation`` true.
    - ``out_of_domain`` / ``unclear_input`` / ``champagne_simple_correction``: the assistant
      declines an off-topic question, asks again after unclear input, or corrects a
      CHAMPAGNE_FEAST+SIMPLE request. They are the error-handling examples the model must learn,
      so cleaning keeps them and the checklist counts them.
    """
    tags: list[str] = []
    assistant_texts = [t.content for t in turns if t.role == "assistant"]
    greeting = bool(assistant_texts) and bool(_GREETING.search(assistant_texts[0]))
    if greeting:
        tags.append("greeting")
    confirmed = any(
        t.role == "assistant"
        and t.order_state
        and t.order_state.get("readyForConfirmation") is True
        and all(t.order_state.get(f) not in (None, "") for f in REQUIRED_ORDER_FIELDS)
        for t in turns
    )
    if greeting and confirmed:
        tags.append("complete_flow")
    joined = "\n".join(assistant_texts)
    if _OUT_OF_DOMAIN.search(joined):
        tags.append("out_of_domain")
    if _UNCLEAR.search(joined):
        tags.append("unclear_input")
    if _CHAMPAGNE_FIX.search(joined):
        tags.append("champagne_simple_correction")
    return tags


# --- Results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CleaningConfig:
    """Knobs of the cleaning rules (the shell exposes them as Dagster config)."""

    max_message_chars: int = 2000


@dataclass(frozen=True, slots=True)
class Rejection:
    """One quarantined session (or group of orphan messages sharing a session id)."""

    session_id: str
    partition_date: str
    reason: str
    detail: str
    n_rows: int


@dataclass(frozen=True, slots=True)
class StateDrop:
    """An order_state removed from a kept turn because it could not be parsed."""

    session_id: str
    message_id: int | None
    reason: str
    detail: str


@dataclass
class _Tally:
    """What a cleaning pass counts, whether or not its sessions are kept alongside."""

    rejections: list[Rejection]
    raw_rows: int
    raw_session_ids: set[str]
    state_drops: list[StateDrop] = field(default_factory=list)
    dropped_messages: Counter[str] = field(default_factory=Counter)
    collapsed_duplicates: Counter[str] = field(default_factory=Counter)
    role_spellings: Counter[str] = field(default_factory=Counter)

    @property
    def dropped_order_states(self) -> Counter[str]:
        return Counter(d.reason for d in self.state_drops)

    @property
    def rejection_counts(self) -> Counter[str]:
        return Counter(r.reason for r in self.rejections)

    def rejections_table(self) -> pa.Table:
        return rejections_to_table(self.rejections)


@dataclass
class CleaningSummary(_Tally):
    """Everything about a cleaning pass but the sessions themselves: what the asset reports."""

    kept_sessions: int = 0
    kept_turns: int = 0

    @property
    def rejection_rate(self) -> float:
        total = self.kept_sessions + len(self.rejections)
        return len(self.rejections) / total if total else 0.0

    def row_balance(self) -> dict[str, int]:
        """Where every raw row went; ``unaccounted`` must be 0."""
        dropped = sum(self.dropped_messages.values())
        collapsed = sum(self.collapsed_duplicates.values())
        rejected = sum(r.n_rows for r in self.rejections)
        return {
            "raw_rows": self.raw_rows,
            "kept_turns": self.kept_turns,
            "dropped_messages": dropped,
            "collapsed_duplicates": collapsed,
            "rejected_rows": rejected,
            "unaccounted": self.raw_rows - self.kept_turns - dropped - collapsed - rejected,
        }


@dataclass
class CleaningResult(_Tally):
    """Kept sessions (not yet pseudonymized), rejections and the per-reason repair counts."""

    sessions: list[Session] = field(default_factory=list)

    def summary(self) -> CleaningSummary:
        tally = {f.name: getattr(self, f.name) for f in fields(_Tally)}
        return CleaningSummary(**tally, kept_sessions=len(self.sessions), kept_turns=sum(len(s.turns) for s in self.sessions))

    @property
    def rejection_rate(self) -> float:
        return self.summary().rejection_rate

    def row_balance(self) -> dict[str, int]:
        """Where every raw row went; ``unaccounted`` must be 0."""
        return self.summary().row_balance()


def rejections_to_table(rejections: Iterable[Rejection]) -> pa.Table:
    rows = [
        {"session_id": r.session_id, "partition_date": r.partition_date, "reason": r.reason, "detail": r.detail, "n_rows": r.n_rows}
        for r in rejections
    ]
    return pa.Table.from_pylist(rows, schema=REJECTED_SCHEMA)


def conservation_violations(raw_session_ids: Iterable[str], cleaned_ids: Iterable[str], rejected_ids: Iterable[str]) -> dict[str, list[str]]:
    """Raw ids found in neither / both outputs, and output ids that were never raw: all must be empty."""
    raw, cleaned, rejected = set(raw_session_ids), list(cleaned_ids), list(rejected_ids)
    c_set, r_set = set(cleaned), set(rejected)
    dup = [k for k, n in Counter(cleaned + rejected).items() if n > 1]
    return {
        "missing": sorted(raw - c_set - r_set),
        "in_both_or_twice": sorted(dup),
        "unknown": sorted((c_set | r_set) - raw),
    }


# --- The cleaning pass ------------------------------------------------------------------------
#
# Hot path: a partition can hold a million rows, so the per-row work is done once per distinct
# value where values repeat (roles, message texts, order_state strings), the ordering of turns is
# one Arrow sort over the whole partition, and the Python loop over rows only assembles turns.
# The rules and their order of precedence are exactly those of the row-by-row description below.

_INT64_MIN = -(2**63)


def _timestamps(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """Naive datetimes (None for nulls) ~10x faster than ``to_pylist`` (which goes through tz logic)."""
    if len(column) == 0:
        return []
    return column.to_numpy(zero_copy_only=False).astype("datetime64[us]").astype(object).tolist()


def _distinct(column: pa.ChunkedArray) -> tuple[list[Any], list[int | None]]:
    """(distinct values in first-appearance order, per-row code into them; None for nulls)."""
    enc = column.combine_chunks().dictionary_encode()
    return enc.dictionary.to_pylist(), enc.indices.to_pylist()


def clean_partition(raw: pa.Table, config: CleaningConfig | None = None) -> CleaningResult:
    """Clean one raw partition (or a range of them: each session keeps its own partition_date).

    Never raises on bad rows: every raw session id ends in exactly one of ``sessions`` /
    ``rejections``. PII is NOT removed here (see `pii.pseudonymize_sessions`). See
    `_clean_partition` for the rules and their precedence.
    """
    with paused_gc():
        return _clean_partition(raw, config or CleaningConfig())


def _clean_partition(raw: pa.Table, config: CleaningConfig) -> CleaningResult:
    """The cleaning pass.

    Rows are grouped by session id (null ids under "", rejected as `missing_session_id`), groups
    in order of first appearance. Per group, in this order of precedence: rejected when all rows
    are orphans, when a row has a decode error, when no row is a message, when a role is unknown;
    then the messages, ordered by (created_at, id) (nulls first), are normalized and a message
    over the length limit rejects the session; empty messages are dropped, consecutive identical
    (role, text, order_state) collapsed, unparseable order_states dropped with a reason; a session
    without a user->assistant exchange is rejected.
    """
    n = raw.num_rows
    result = CleaningResult(sessions=[], rejections=[], raw_rows=n, raw_session_ids=set())
    if n == 0:
        return result
    column = raw.column
    keys_enc = pc.fill_null(column("session_id"), "").combine_chunks().dictionary_encode()
    group_keys: list[str] = keys_enc.dictionary.to_pylist()  # first-appearance order
    gid = keys_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    result.raw_session_ids = set(group_keys)
    n_groups = len(group_keys)

    # Turn order: one stable sort by (group, created_at or min, id or -1), as sorted() per group.
    mid_arr = column("message_id")
    created_key = pc.fill_null(column("message_created_at").cast(pa.int64()), _INT64_MIN)
    mid_key = pc.fill_null(pc.if_else(pc.equal(mid_arr, 0), -1, mid_arr), -1)
    order = pc.sort_indices(pa.table({"g": gid, "t": created_key, "m": mid_key}), sort_keys=[("g", "ascending"), ("t", "ascending"), ("m", "ascending")])
    perm: list[int] = order.to_pylist()
    sizes = np.bincount(gid, minlength=n_groups)
    bounds = np.concatenate(([0], np.cumsum(sizes))).tolist()
    first_row = np.full(n_groups, n, dtype=np.int64)
    np.minimum.at(first_row, gid, np.arange(n, dtype=np.int64))
    first = pa.array(first_row)

    # Group-level facts, computed column-wise.
    is_msg_arr = pc.or_(pc.is_valid(mid_arr), pc.is_valid(column("role")))
    is_msg: list[bool] = is_msg_arr.to_pylist()
    n_msg = np.bincount(gid, weights=is_msg_arr.to_numpy(zero_copy_only=False), minlength=n_groups)
    n_orphan = np.bincount(gid, weights=pc.fill_null(column("is_orphan"), False).to_numpy(zero_copy_only=False), minlength=n_groups)
    errors_by_group: dict[int, set[str]] = defaultdict(set)
    decode_error = column("decode_error")
    if decode_error.null_count < n:
        flagged = pc.indices_nonzero(pc.fill_null(pc.not_equal(decode_error, ""), False)).to_pylist()
        for i, e in zip(flagged, decode_error.take(pa.array(flagged, pa.int64())).to_pylist(), strict=True):
            errors_by_group[int(gid[i])].add(e)

    raw_roles: list[str | None] = column("role").to_pylist()
    role_of = {r: normalize_role(r) for r in set(raw_roles)}
    spelling_of = {r: f"{r}->{role_of[r]}" for r in role_of if role_of[r] is not None and r != role_of[r]}
    unknown_by_group: dict[int, set[str]] = defaultdict(set)
    unknown_roles = {r for r, v in role_of.items() if v is None}
    if unknown_roles:
        for i, r in enumerate(raw_roles):
            if r in unknown_roles and is_msg[i]:
                unknown_by_group[int(gid[i])].add(repr(r))

    texts, text_code = _distinct(column("content"))
    texts = [normalize_text(t) for t in texts]
    state_texts, state_code = _distinct(column("order_state"))
    states = [_parse_state(text) for text in state_texts]  # distinct texts: each parsed once
    created = _timestamps(column("message_created_at"))
    mids: list[int | None] = mid_arr.to_pylist()

    def at_first(name: str) -> list[Any]:
        return column(name).take(first).to_pylist()

    parts, statuses, names = at_first("partition_date"), at_first("status"), at_first("customer_name")
    session_created = _timestamps(column("session_created_at").take(first))
    max_chars = config.max_message_chars
    rejections = result.rejections

    for g, sid in enumerate(group_keys):
        part = parts[g] or ""
        size = int(sizes[g])
        if not sid:
            rejections.append(Rejection(sid, part, MISSING_SESSION_ID, f"{size} row(s) without a session id", size))
            continue
        if n_orphan[g] == size:
            rejections.append(Rejection(sid, part, ORPHAN_MESSAGES, f"{size} message(s) whose session row does not exist", size))
            continue
        if g in errors_by_group:
            rejections.append(Rejection(sid, part, UNDECODABLE_ROW, "; ".join(sorted(errors_by_group[g])), size))
            continue
        if not n_msg[g]:
            rejections.append(Rejection(sid, part, EMPTY_SESSION, "session has no messages", size))
            continue
        if g in unknown_by_group:
            rejections.append(Rejection(sid, part, UNKNOWN_ROLE, f"roles {sorted(unknown_by_group[g])}", size))
            continue

        turns: list[Turn] = []
        drops: list[StateDrop] = []
        spellings: dict[str, int] = {}
        empty = collapsed = 0
        prev_role: str | None = None
        prev_content = ""
        prev_state: dict[str, Any] | None = None
        exchange = False
        too_long: Rejection | None = None
        for i in perm[bounds[g] : bounds[g + 1]]:
            if not is_msg[i]:
                continue
            code = text_code[i]
            content = texts[code] if code is not None else ""
            if len(content) > max_chars:
                too_long = Rejection(sid, part, MESSAGE_TOO_LONG, f"message {mids[i]} has {len(content)} chars > {max_chars}", size)
                break
            if not content:
                empty += 1
                continue
            raw_role = raw_roles[i]
            role = role_of[raw_role]
            spelling = spelling_of.get(raw_role)  # type: ignore[arg-type]
            if spelling is not None:
                spellings[spelling] = spellings.get(spelling, 0) + 1
            code = state_code[i]
            if code is None:
                state = None
            else:
                state, error, reason, detail = states[code]
                if error is not None:
                    drops.append(StateDrop(sid, mids[i], reason, detail))
            if role == prev_role and content == prev_content and (state is prev_state or repr(state) == repr(prev_state)):
                collapsed += 1
                continue
            if role == "assistant" and prev_role == "user":
                exchange = True
            prev_role, prev_content, prev_state = role, content, state
            turns.append(Turn(role, content, state, created[i], mids[i]))  # type: ignore[arg-type]
        if too_long is not None:
            rejections.append(too_long)
            continue
        if not exchange:
            rejections.append(Rejection(sid, part, NO_EXCHANGE, f"{len(turns)} usable turn(s), no user message answered by the assistant", size))
            continue

        status = (statuses[g] or "").strip().upper()
        name = names[g]
        result.sessions.append(
            Session(
                session_id=sid,
                turns=turns,
                customer_name=normalize_text(name) or None if name else None,
                status=status or SessionStatus.IN_PROGRESS.value,
                created_at=session_created[g],
                partition_date=part,
                tags=scenario_tags(turns) + (["order_state_dropped"] if drops else []),
            )
        )
        result.state_drops.extend(drops)
        if empty:
            result.dropped_messages[EMPTY_CONTENT] += empty
        if n_msg[g] < size:  # a null-message row next to real messages (not written by the app)
            result.dropped_messages[NULL_MESSAGE_ROW] += size - int(n_msg[g])
        if collapsed:
            result.collapsed_duplicates[CONSECUTIVE_DUPLICATE] += collapsed
        if spellings:
            result.role_spellings.update(spellings)
    return result


def _parse_state(text: str) -> tuple[dict[str, Any] | None, OrderStateError | None, str, str]:
    """(state, error, drop reason, detail) for one order_state text; the reason is the error's
    structured `OrderStateError.reason` (``malformed_json``, ``invalid_quantity``, ...)."""
    try:
        return normalize_order_state(text), None, "", ""
    except OrderStateError as exc:
        return None, exc, exc.reason, str(exc)


# --- The guide's data-quality checklist -------------------------------------------------------

MIN_SESSIONS = 50


def checklist_counts(sessions: Iterable[Session]) -> Counter[str]:
    """The counts behind `checklist_figures`, addable across chunks of sessions.

    Keys: ``sessions``, ``source_sessions`` (chunks must hold all variants of a source, as
    `stages.augment` chunks do), ``tag:<tag>``, ``dinner:<X>``, ``style:<X>``, ``combo:<X>+<Y>``.
    """
    counts: Counter[str] = Counter()
    sources: set[str] = set()
    for s in sessions:
        counts["sessions"] += 1
        sources.add(s.source_session_id)
        counts.update(f"tag:{t}" for t in set(s.tags))
        counts.update({f"dinner:{t.order_state['dinnerType']}" for t in s.turns if t.order_state and "dinnerType" in t.order_state})
        counts.update({f"style:{t.order_state['servingStyle']}" for t in s.turns if t.order_state and "servingStyle" in t.order_state})
        final = s.final_order_state or {}
        if final.get("dinnerType") and final.get("servingStyle"):
            counts[f"combo:{final['dinnerType']}+{final['servingStyle']}"] += 1
    counts["source_sessions"] = len(sources)
    return counts


def checklist_from_counts(counts: Counter[str]) -> dict[str, Any]:
    """`checklist_figures` from (merged) `checklist_counts`."""
    dinners = {d.value: counts[f"dinner:{d.value}"] for d in DinnerType}
    styles = {s.value: counts[f"style:{s.value}"] for s in ServingStyle}
    return {
        "sessions": counts["sessions"],
        "source_sessions": counts["source_sessions"],
        "complete_flows": counts["tag:complete_flow"],
        "error_handling": sum(counts[f"tag:{t}"] for t in ERROR_HANDLING_TAGS),
        "error_handling_by_kind": {t: counts[f"tag:{t}"] for t in sorted(ERROR_HANDLING_TAGS)},
        "dinners": dinners,
        "styles": styles,
        "missing_dinners": [k for k, v in dinners.items() if not v],
        "missing_styles": [k for k, v in styles.items() if not v],
        "final_combos": {k.removeprefix("combo:"): v for k, v in sorted(counts.items()) if k.startswith("combo:") and v},
    }


def checklist_figures(sessions: Iterable[Session]) -> dict[str, Any]:
    """The figures behind the guide's checklist (데이터 품질 체크리스트) for a set of sessions.

    A dinner/style counts as present when some assistant order_state holds it, so a requested
    CHAMPAGNE_FEAST+SIMPLE that the assistant corrected does not count as SIMPLE coverage.
    """
    return checklist_from_counts(checklist_counts(sessions))
