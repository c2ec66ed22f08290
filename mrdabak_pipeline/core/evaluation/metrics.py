"""Metrics for the assistant's replies, measured the way the production app consumes them.

The app parses each reply as ``{"message": ..., "orderState": {...}}`` with
`domain.parse_assistant_reply`, so a reply only counts when that strict parser accepts it: a reply
with a wrong enum or an unknown key is as useless to the app as broken JSON. Everything else
(field accuracy, exact match, rules) is computed on the parsed, normalized state, so spelling
differences the app tolerates (``deluxe`` vs ``DELUXE``) are not errors.

Every figure carries its count ``n`` and a 95% interval: Wilson for proportions (honest at small n
and at 0%/100%), a percentile bootstrap over items for means and F1.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sacrebleu.metrics import CHRF

from mrdabak_pipeline.core.domain import (
    ORDER_FIELDS,
    REQUIRED_ORDER_FIELDS,
    OrderStateError,
    is_allowed_combination,
    parse_assistant_reply,
)

#: The six order fields whose per-field accuracy is reported.
FIELD_NAMES: tuple[str, ...] = REQUIRED_ORDER_FIELDS

#: A reply that declines an out-of-domain question says it cannot help with that / it is unrelated
#: to dinner orders. Kept broad on purpose: the wording varies, the intent does not.
DECLINE_PATTERN = re.compile(
    r"(답변|대답|안내|도움|도와|말씀)[^.?!]{0,12}(수\s*없|어렵|못\s*드)"
    r"|(관계|관련)(가|이)?\s*없"
    r"|주문\s*(외|이외|와\s*관련\s*없)"
    r"|(주문|디너)[^.?!]{0,8}만\s*(도와|도움|안내|받)"
    r"|준비하지\s*않"
)
#: Categories (golden set) or tags that mark an out-of-domain question.
OOD_MARKERS: tuple[str, ...] = ("out_of_domain", "out-of-domain", "ood", "off_topic")

_CHRF = CHRF()


# --- Confidence intervals ----------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval for a proportion; ``None`` when n is 0 (nothing measured)."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamp against float rounding: at k=0 the bound must be exactly 0, at k=n exactly 1.
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def bootstrap_interval(
    n: int,
    statistic: Callable[[np.ndarray], float],
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap over item indices: `statistic` gets an index array and returns a float.

    Indices (not values) are resampled so ratio statistics such as micro-F1 resample their
    numerator and denominator together. Deterministic for a seed so reports are reproducible.
    """
    if n <= 0:
        return None
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(n_resamples)], dtype=float)
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return None
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


@dataclass(frozen=True, slots=True)
class Metric:
    """One figure: value (``None`` when nothing could be measured), n, interval and its method."""

    value: float | None
    n: int
    low: float | None = None
    high: float | None = None
    method: str = "wilson"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def proportion(successes: int, n: int) -> Metric:
    """A proportion with its Wilson interval."""
    ci = wilson_interval(successes, n)
    if ci is None:
        return Metric(None, 0, method="wilson")
    return Metric(successes / n, n, ci[0], ci[1], "wilson")


def mean_metric(values: Sequence[float], seed: int = 0) -> Metric:
    """A mean with its bootstrap interval."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return Metric(None, 0, method="bootstrap")
    ci = bootstrap_interval(arr.size, lambda idx: float(arr[idx].mean()), seed=seed)
    assert ci is not None
    return Metric(float(arr.mean()), int(arr.size), ci[0], ci[1], "bootstrap")


# --- Evaluation items --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvalItem:
    """One assistant turn to predict: the conversation before it and the reply it should be."""

    item_id: str
    source: str
    prompt: list[dict[str, str]]
    reference: str
    ref_message: str
    ref_state: dict[str, Any]
    category: str | None = None
    group: str | None = None
    variant: int | None = None
    turn_index: int = 0
    is_ood: bool = False
    example_id: str = ""


@dataclass(frozen=True, slots=True)
class SkippedItem:
    """An example (or turn) that could not become an item, and why: nothing is dropped silently."""

    source: str
    example_id: str
    reason: str


def _stable_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_decline(message: str) -> bool:
    """Whether a reply message declines (an out-of-domain question): see `DECLINE_PATTERN`."""
    return bool(DECLINE_PATTERN.search(message or ""))


def _is_ood_example(example: Mapping[str, Any]) -> bool:
    labels = [str(example.get("category") or "")] + [str(t) for t in example.get("tags") or []]
    return any(label.strip().lower() in OOD_MARKERS for label in labels)


def _shape_key(messages: Sequence[Any]) -> str:
    """What augmentation keeps: per assistant turn, the order's dinner, style, quantity and flags.

    Used to group rewordings when an example carries no ``source_session_id``: augmented variants
    of one session (and any other sessions with the same order flow) share it.
    """
    shape = []
    for m in messages:
        if isinstance(m, Mapping) and m.get("role") == "assistant":
            try:
                state = parse_assistant_reply(str(m.get("content")))[1]
            except OrderStateError:
                state = {}
            shape.append([state.get(k) for k in ("dinnerType", "servingStyle", "quantity", "readyForConfirmation", "needsMoreInfo")])
    return "shape:" + _stable_hash(json.dumps(shape, ensure_ascii=False, default=str))[:16]


def items_from_examples(
    examples: Iterable[Mapping[str, Any]],
    source: str,
    max_items: int | None = None,
    last_turn_only: bool = False,
) -> tuple[list[EvalItem], list[SkippedItem]]:
    """Every assistant turn of every chat example becomes one item; bounded by `max_items`.

    An example is ``{"messages": [system, user, assistant, ...]}`` with optional ``id``,
    ``category``, ``tags``, ``source_session_id`` and ``variant``. Augmented variants of one session
    share a source id, which is what the consistency metric groups by; without one, examples are
    grouped by the shape of their order flow (`_shape_key`). Examples are taken in a stable order
    (hash of the group, then variant, then content) so the bound keeps whole groups together and
    the same data always gives the same items. `last_turn_only` scores only the final reply (the
    golden set's convention: earlier turns are hand-written context). An assistant turn with
    ``weight: 0`` is context the training did not learn from, and a reference that does not parse
    as the app's JSON cannot be scored: both are returned as skipped with the reason.
    """
    rows = []
    for pos, ex in enumerate(examples):
        ex_id = str(ex.get("id") or ex.get("session_id") or f"{source}-{pos}")
        group = ex.get("source_session_id") or _shape_key(ex.get("messages") or [])
        content = _stable_hash(json.dumps(ex.get("messages"), ensure_ascii=False, sort_keys=True, default=str))
        rows.append((_stable_hash(str(group)), int(ex.get("variant") or 0), content, ex_id, str(group), ex))
    rows.sort(key=lambda r: r[:4])

    items: list[EvalItem] = []
    skipped: list[SkippedItem] = []
    for _, variant, _, ex_id, group, ex in rows:
        messages = ex.get("messages")
        if not isinstance(messages, list) or not messages:
            skipped.append(SkippedItem(source, ex_id, "no messages list"))
            continue
        ood_example = _is_ood_example(ex)
        positions = list(enumerate(i for i, m in enumerate(messages) if isinstance(m, Mapping) and m.get("role") == "assistant"))
        if last_turn_only:
            positions = positions[-1:]
        for turn, i in positions:
            msg = messages[i]
            if max_items is not None and len(items) >= max_items:
                return items, skipped
            if msg.get("weight") == 0:
                skipped.append(SkippedItem(source, f"{ex_id}#{turn}", "weight 0: not a training target"))
                continue
            content = msg.get("content")
            try:
                ref_message, ref_state = parse_assistant_reply(content if isinstance(content, str) else "")
            except OrderStateError as exc:
                skipped.append(SkippedItem(source, f"{ex_id}#{turn}", f"reference is not the app's JSON: {exc}"))
                continue
            prompt = [{"role": str(m.get("role")), "content": str(m.get("content"))} for m in messages[:i]]
            items.append(
                EvalItem(
                    item_id=f"{source}:{ex_id}#{turn}",
                    source=source,
                    prompt=prompt,
                    reference=content,
                    ref_message=ref_message,
                    ref_state=ref_state,
                    category=ex.get("category"),
                    group=group,
                    variant=variant,
                    turn_index=turn,
                    # The reply to an out-of-domain question is the example's last one; the
                    # reference's own decline marks it too, so uncategorized validation data
                    # still gets the metric.
                    is_ood=is_decline(ref_message) or (ood_example and i == len(messages) - 1),
                    example_id=ex_id,
                )
            )
    return items, skipped


# --- Scoring one reply -------------------------------------------------------------------------


def canonical_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A normalized state with the app's defaults filled in, so absent == false / empty list."""
    out = {k: state.get(k) for k in ORDER_FIELDS}
    out["readyForConfirmation"] = bool(out["readyForConfirmation"])
    out["needsMoreInfo"] = sorted(out["needsMoreInfo"] or [])
    return out


@dataclass(slots=True)
class ItemScore:
    """How one reply did against its reference."""

    item_id: str
    prediction: str
    valid_json: bool
    error: str | None = None
    #: Why the app could not use the reply, machine-readable (`OrderStateError.reason`:
    #: ``malformed_json``, ``not_a_reply``, ``unknown_keys``, ``invalid_<field>``); None when it could.
    error_reason: str | None = None
    message: str = ""
    state: dict[str, Any] | None = None
    field_correct: dict[str, bool] = field(default_factory=dict)
    ready_correct: bool = False
    nmi_tp: int = 0
    nmi_fp: int = 0
    nmi_fn: int = 0
    exact_match: bool = False
    rule_violation: bool = False
    is_ood: bool = False
    declined: bool = False
    chrf: float = 0.0
    judge: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_reply(item: EvalItem, prediction: str) -> ItemScore:
    """Score one reply. An unparseable reply is wrong on every field and scores chrF 0.

    needsMoreInfo is compared as a set (true/false positives of missing-field names); an invalid
    reply predicts the empty set.
    """
    ref = canonical_state(item.ref_state)
    score = ItemScore(item_id=item.item_id, prediction=prediction, valid_json=False, is_ood=item.is_ood)
    try:
        message, state = parse_assistant_reply(prediction)
    except OrderStateError as exc:
        score.error, score.error_reason = str(exc), exc.reason
        score.nmi_fn = len(ref["needsMoreInfo"])
        score.field_correct = dict.fromkeys(FIELD_NAMES, False)
        return score
    pred = canonical_state(state)
    score.valid_json = True
    score.message = message
    score.state = state
    score.field_correct = {f: pred[f] == ref[f] for f in FIELD_NAMES}
    score.ready_correct = pred["readyForConfirmation"] == ref["readyForConfirmation"]
    p_set, r_set = set(pred["needsMoreInfo"]), set(ref["needsMoreInfo"])
    score.nmi_tp, score.nmi_fp, score.nmi_fn = len(p_set & r_set), len(p_set - r_set), len(r_set - p_set)
    score.exact_match = pred == ref
    score.rule_violation = not is_allowed_combination(pred["dinnerType"], pred["servingStyle"])
    score.declined = is_decline(message)
    score.chrf = float(_CHRF.sentence_score(message, [item.ref_message]).score)
    return score


def score_replies(items: Sequence[EvalItem], predictions: Sequence[str]) -> list[ItemScore]:
    """`score_reply` for aligned items and predictions."""
    if len(items) != len(predictions):
        raise ValueError(f"{len(items)} items but {len(predictions)} predictions")
    return [score_reply(it, p) for it, p in zip(items, predictions, strict=True)]


# --- Consistency across reworded inputs --------------------------------------------------------

_SAME_AS_REFERENCE = "=REF"


def mapped_state(item: EvalItem, score: ItemScore) -> str:
    """The predicted state with every value that equals the reference replaced by a marker.

    Augmented variants of one session differ in names, dates, times and addresses, so their raw
    states legitimately differ; after this mapping, a model that reads each variant the same way
    gives the same string for all of them, and one that gets a field right in one wording but
    wrong in another does not.
    """
    if not score.valid_json or score.state is None:
        return "<invalid>"
    ref, pred = canonical_state(item.ref_state), canonical_state(score.state)
    return json.dumps(
        {k: (_SAME_AS_REFERENCE if pred[k] == ref[k] else pred[k]) for k in ORDER_FIELDS},
        ensure_ascii=False,
        sort_keys=True,
    )


def consistency_groups(items: Sequence[EvalItem], scores: Sequence[ItemScore]) -> list[dict[str, Any]]:
    """Groups of the same turn across >= 2 variants of one source session, and whether they agree.

    A group with an unparseable reply is inconsistent (the app would behave differently).
    """
    groups: dict[tuple[str, str, int], list[tuple[EvalItem, ItemScore]]] = defaultdict(list)
    for it, sc in zip(items, scores, strict=True):
        if it.group is not None:
            # Only rewordings of the same point in a conversation are comparable: same turn, same
            # dialog length before it.
            groups[(it.source, it.group, it.turn_index)].append((it, sc))
    out = []
    for (source, group, turn), members in sorted(groups.items()):
        if len({it.example_id for it, _ in members}) < 2:
            continue
        mapped = [mapped_state(it, sc) for it, sc in members]
        out.append(
            {
                "source": source,
                "group": group,
                "turn": turn,
                "n_variants": len(members),
                "consistent": "<invalid>" not in mapped and len(set(mapped)) == 1,
            }
        )
    return out


# --- Summaries ---------------------------------------------------------------------------------


def summarize(items: Sequence[EvalItem], scores: Sequence[ItemScore], seed: int = 0) -> dict[str, Metric]:
    """All metrics for one model on one set of items, each with n and an interval."""
    n = len(scores)
    metrics: dict[str, Metric] = {"json_valid": proportion(sum(s.valid_json for s in scores), n)}
    for f in FIELD_NAMES:
        metrics[f"field_acc/{f}"] = proportion(sum(s.field_correct.get(f, False) for s in scores), n)
    metrics["ready_for_confirmation_acc"] = proportion(sum(s.ready_correct for s in scores), n)

    tp = np.array([s.nmi_tp for s in scores], dtype=float)
    fp = np.array([s.nmi_fp for s in scores], dtype=float)
    fn = np.array([s.nmi_fn for s in scores], dtype=float)

    def f1(idx: np.ndarray) -> float:
        t, p, m = tp[idx].sum(), fp[idx].sum(), fn[idx].sum()
        # Nothing missing and nothing claimed missing is full agreement, not 0/0.
        return 1.0 if t + p + m == 0 else float(2 * t / (2 * t + p + m))

    ci = bootstrap_interval(n, f1, seed=seed)
    metrics["needs_more_info_f1"] = (
        Metric(f1(np.arange(n)), n, ci[0], ci[1], "bootstrap") if ci else Metric(None, 0, method="bootstrap")
    )
    metrics["exact_match"] = proportion(sum(s.exact_match for s in scores), n)
    groups = consistency_groups(items, scores)
    metrics["consistency"] = proportion(sum(g["consistent"] for g in groups), len(groups))
    metrics["rule_violation_rate"] = proportion(sum(s.rule_violation for s in scores), n)
    ood = [s for s in scores if s.is_ood]
    metrics["ood_declined"] = proportion(sum(s.declined for s in ood), len(ood))
    metrics["chrf"] = mean_metric([s.chrf for s in scores], seed=seed)
    judged = [s.judge for s in scores if s.judge is not None]
    if judged:
        metrics["judge"] = mean_metric(judged, seed=seed)
    return metrics


def corpus_chrf(items: Sequence[EvalItem], scores: Sequence[ItemScore]) -> float | None:
    """Corpus-level chrF of the `message` texts (invalid replies count as empty)."""
    if not scores:
        return None
    return float(_CHRF.corpus_score([s.message for s in scores], [[it.ref_message for it in items]]).score)


def badness(score: ItemScore) -> tuple[int, int, int, float]:
    """Sort key, worst first: unparseable, rule violation, fewest fields right, lowest chrF."""
    return (
        int(score.valid_json),
        -int(score.rule_violation),
        sum(score.field_correct.values()) + int(score.exact_match),
        score.chrf,
    )


# --- Optional LLM-as-judge ---------------------------------------------------------------------

JUDGE_INSTRUCTIONS = (
    "You rate replies of a Korean dinner-delivery voice assistant (Mr. Daebak). Given the "
    "conversation and the assistant's reply message, rate how natural, polite and fitting the reply "
    "is for a Korean customer on a 1-5 scale (1 = unusable, 5 = as good as a skilled human agent). "
    'Answer with JSON only: {"score": <1-5>}.'
)


def judge_messages(item: EvalItem, message: str) -> list[dict[str, str]]:
    """The chat messages sent to the judge model for one reply (the system prompt left out)."""
    dialog = "\n".join(f"{m['role']}: {m['content']}" for m in item.prompt if m["role"] != "system")
    return [
        {"role": "system", "content": JUDGE_INSTRUCTIONS},
        {"role": "user", "content": f"Conversation:\n{dialog}\n\nAssistant reply message:\n{message}"},
    ]


def parse_judge_score(text: str) -> float | None:
    """The 1-5 score from a judge answer (JSON, or the first digit 1-5); ``None`` if absent."""
    try:
        obj = json.loads(text)
        value = float(obj["score"]) if isinstance(obj, dict) else float(obj)
        return value if 1 <= value <= 5 else None
    except (ValueError, TypeError, KeyError, json.JSONDecodeError):
        match = re.search(r"\b([1-5])(\.\d+)?\b", text or "")
        return float(match.group(0)) if match else None


def apply_judge(
    items: Sequence[EvalItem],
    scores: Sequence[ItemScore],
    complete: Callable[[list[dict[str, str]]], str],
) -> int:
    """Fill `ItemScore.judge` for valid replies using `complete` (messages -> answer text).

    The judge is optional and external, so a failing call leaves that score empty instead of
    failing the evaluation; returns how many replies were judged.
    """
    judged = 0
    for it, sc in zip(items, scores, strict=True):
        if not sc.valid_json:
            continue
        try:
            sc.judge = parse_judge_score(complete(judge_messages(it, sc.message)))
        except Exception:  # noqa: BLE001 - any endpoint failure means "not judged", not a crash
            sc.judge = None
        judged += sc.judge is not None
    return judged
