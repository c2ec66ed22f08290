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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

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
    [
        ("session_id", pa.string()),
        ("partition_date", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("n_rows", pa.int64()),
    ]
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


def state_drop_reason(error: OrderStateError) -> str:
    """A machine-readable reason from `normalize_order_state`'s message ('malformed_json', 'invalid_quantity')."""
    msg = str(error)
    if msg.startswith("malformed JSON"):
        return "malformed_json"
    if msg.startswith("expected a JSON object"):
        return "not_an_object"
    if msg.startswith("unknown keys"):
        return "unknown_keys"
    head = msg.split(":", 1)[0].strip()
    return f"invalid_{head}" if head.isidentifier() else "invalid_value"


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
class CleaningResult:
    """Kept sessions (not yet pseudonymized), rejections and the per-reason repair counts."""

    sessions: list[Session]
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

    @property
    def rejection_rate(self) -> float:
        total = len(self.sessions) + len(self.rejections)
        return len(self.rejections) / total if total else 0.0

    def row_balance(self) -> dict[str, int]:
        """Where every raw row went; ``unaccounted`` must be 0."""
        kept = sum(len(s.turns) for s in self.sessions)
        dropped = sum(self.dropped_messages.values())
        collapsed = sum(self.collapsed_duplicates.values())
        rejected = sum(r.n_rows for r in self.rejections)
        return {
            "raw_rows": self.raw_rows,
            "kept_turns": kept,
            "dropped_messages": dropped,
            "collapsed_duplicates": collapsed,
            "rejected_rows": rejected,
            "unaccounted": self.raw_rows - kept - dropped - collapsed - rejected,
        }

    def rejections_table(self) -> pa.Table:
        return rejections_to_table(self.rejections)


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

_MIN_TS = datetime.min


def _session_key(session_id: Any) -> str:
    """Null ids group under "" and are rejected as `missing_session_id`."""
    return session_id if isinstance(session_id, str) else ""


def clean_partition(raw: pa.Table, config: CleaningConfig | None = None) -> CleaningResult:
    """Clean one raw partition (or a range of them: each session keeps its own partition_date).

    Never raises on bad rows: every raw session id ends in exactly one of ``sessions`` /
    ``rejections``. PII is NOT removed here (see `pii.pseudonymize_sessions`).
    """
    config = config or CleaningConfig()
    cols = {name: raw.column(name).to_pylist() for name in raw.schema.names if name in _USED_COLUMNS}
    n = raw.num_rows
    groups: dict[str, list[int]] = defaultdict(list)
    for i, sid in enumerate(cols["session_id"]):
        groups[_session_key(sid)].append(i)

    result = CleaningResult(sessions=[], rejections=[], raw_rows=n, raw_session_ids=set(groups))
    state_cache: _StateCache = {}
    for sid, idx in groups.items():
        _clean_session(sid, idx, cols, config, result, state_cache)
    return result


_USED_COLUMNS = frozenset(
    {
        "session_id", "customer_name", "status", "session_created_at", "message_id", "role", "content",
        "order_state", "message_created_at", "is_orphan", "decode_error", "partition_date",
    }
)


_StateCache = dict[str, tuple[dict[str, Any] | None, OrderStateError | None]]


def _parse_state(raw: str | None, cache: _StateCache) -> tuple[dict[str, Any] | None, OrderStateError | None]:
    """`normalize_order_state`, memoized per partition: the same state string recurs across turns
    and sessions (every greeting carries the same empty state). The dicts are shared, never mutated."""
    if raw is None:
        return None, None
    hit = cache.get(raw)
    if hit is None:
        try:
            hit = (normalize_order_state(raw), None)
        except OrderStateError as exc:
            hit = (None, exc)
        cache[raw] = hit
    return hit


def _clean_session(
    sid: str, idx: list[int], cols: dict[str, list[Any]], config: CleaningConfig, result: CleaningResult, state_cache: _StateCache
) -> None:
    first = idx[0]
    part = cols["partition_date"][first] or ""

    def reject(reason: str, detail: str) -> None:
        result.rejections.append(Rejection(sid, part, reason, detail, len(idx)))

    if not sid:
        return reject(MISSING_SESSION_ID, f"{len(idx)} row(s) without a session id")
    if all(cols["is_orphan"][i] for i in idx):
        return reject(ORPHAN_MESSAGES, f"{len(idx)} message(s) whose session row does not exist")
    errors = sorted({e for i in idx if (e := cols["decode_error"][i])})
    if errors:
        return reject(UNDECODABLE_ROW, "; ".join(errors))
    message_rows = [i for i in idx if cols["message_id"][i] is not None or cols["role"][i] is not None]
    if not message_rows:
        return reject(EMPTY_SESSION, "session has no messages")

    roles: list[str] = []
    unknown: set[str] = set()
    for i in message_rows:
        raw_role = cols["role"][i]
        role = normalize_role(raw_role)
        if role is None:
            unknown.add(repr(raw_role))
        roles.append(role or "")
    if unknown:
        return reject(UNKNOWN_ROLE, f"roles {sorted(unknown)}")

    order = sorted(
        range(len(message_rows)),
        key=lambda k: (cols["message_created_at"][message_rows[k]] or _MIN_TS, cols["message_id"][message_rows[k]] or -1),
    )
    turns: list[Turn] = []
    drops: list[StateDrop] = []
    dropped: Counter[str] = Counter()
    collapsed = 0
    spellings: Counter[str] = Counter()
    prev_key: tuple[str, str, str] | None = None
    for k in order:
        i = message_rows[k]
        content = normalize_text(cols["content"][i] or "")
        if len(content) > config.max_message_chars:
            return reject(MESSAGE_TOO_LONG, f"message {cols['message_id'][i]} has {len(content)} chars > {config.max_message_chars}")
        if not content:
            dropped[EMPTY_CONTENT] += 1
            continue
        raw_role = cols["role"][i]
        if raw_role != roles[k]:
            spellings[f"{raw_role}->{roles[k]}"] += 1
        state, error = _parse_state(cols["order_state"][i], state_cache)
        if error is not None:
            drops.append(StateDrop(sid, cols["message_id"][i], state_drop_reason(error), str(error)))
        key = (roles[k], content, repr(state))
        if key == prev_key:
            collapsed += 1
            continue
        prev_key = key
        turns.append(Turn(roles[k], content, state, cols["message_created_at"][i], cols["message_id"][i]))

    if not any(a.role == "user" and b.role == "assistant" for a, b in zip(turns, turns[1:], strict=False)):
        return reject(NO_EXCHANGE, f"{len(turns)} usable turn(s), no user message answered by the assistant")

    status = (cols["status"][first] or "").strip().upper()
    name = cols["customer_name"][first]
    result.sessions.append(
        Session(
            session_id=sid,
            turns=turns,
            customer_name=normalize_text(name) or None if name else None,
            status=status or SessionStatus.IN_PROGRESS.value,
            created_at=cols["session_created_at"][first],
            partition_date=part,
            tags=scenario_tags(turns) + (["order_state_dropped"] if drops else []),
        )
    )
    result.state_drops.extend(drops)
    if len(message_rows) < len(idx):  # a null-message row next to real messages (not written by the app)
        dropped[NULL_MESSAGE_ROW] += len(idx) - len(message_rows)
    result.dropped_messages.update(dropped)
    if collapsed:
        result.collapsed_duplicates[CONSECUTIVE_DUPLICATE] += collapsed
    result.role_spellings.update(spellings)


# --- The guide's data-quality checklist -------------------------------------------------------

MIN_SESSIONS = 50


def checklist_figures(sessions: Iterable[Session]) -> dict[str, Any]:
    """The figures behind the guide's checklist (데이터 품질 체크리스트) for a set of sessions.

    A dinner/style counts as present when some assistant order_state holds it, so a requested
    CHAMPAGNE_FEAST+SIMPLE that the assistant corrected does not count as SIMPLE coverage.
    """
    sessions = list(sessions)
    dinners: Counter[str] = Counter()
    styles: Counter[str] = Counter()
    combos: Counter[str] = Counter()
    tags: Counter[str] = Counter()
    for s in sessions:
        tags.update(set(s.tags))
        seen_d = {t.order_state["dinnerType"] for t in s.turns if t.order_state and "dinnerType" in t.order_state}
        seen_s = {t.order_state["servingStyle"] for t in s.turns if t.order_state and "servingStyle" in t.order_state}
        dinners.update(seen_d)
        styles.update(seen_s)
        final = s.final_order_state or {}
        if final.get("dinnerType") and final.get("servingStyle"):
            combos[f"{final['dinnerType']}+{final['servingStyle']}"] += 1
    return {
        "sessions": len(sessions),
        "source_sessions": len({s.source_session_id for s in sessions}),
        "complete_flows": tags["complete_flow"],
        "error_handling": sum(tags[t] for t in ERROR_HANDLING_TAGS),
        "error_handling_by_kind": {t: tags[t] for t in sorted(ERROR_HANDLING_TAGS)},
        "dinners": {d.value: dinners[d.value] for d in DinnerType},
        "styles": {s.value: styles[s.value] for s in ServingStyle},
        "missing_dinners": [d.value for d in DinnerType if not dinners[d.value]],
        "missing_styles": [s.value for s in ServingStyle if not styles[s.value]],
        "final_combos": dict(sorted(combos.items())),
    }
