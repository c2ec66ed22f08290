"""Preparation: raw rows -> cleaned + quarantined sessions (PII pseudonymized) -> augmented variants.

Thin shell over `core.stages` (cleaning, PII and augmentation, chunked over the cores). The
checks are evaluated inside the asset ops (`check_specs`), on the values that are about to be
stored, so no table is read twice and the PII scan can stop a leak before it reaches disk.
"""

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    BackfillPolicy,
    Config,
    MetadataValue,
    Output,
    multi_asset,
)
from pydantic import Field

from mrdabak_pipeline.core.domain import Session
from mrdabak_pipeline.core.prepare import cleaning, stages
from mrdabak_pipeline.defs.ingestion.assets import preview_markdown
from mrdabak_pipeline.defs.partitions import daily_partitions

GROUP = "preparation"


class CleaningRunConfig(Config):
    """Thresholds of the cleaning step."""

    max_message_chars: int = Field(default=2000, description="Longer messages quarantine their session (message_too_long).")
    max_rejection_rate: float = Field(
        default=0.25, description="The rejection_rate check fails above this share of rejected sessions."
    )


class AugmentationRunConfig(Config):
    """How many variants per session, and the seed that makes them reproducible."""

    k: int = Field(default=3, ge=0, description="Variants per cleaned session, in addition to the original.")
    seed: int = Field(default=42, description="Same seed, same variants.")


def _md_counts(counts: dict[str, int], key: str = "reason") -> MetadataValue:
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return MetadataValue.md(f"| {key} | count |\n|---|---|\n{rows}" if rows else f"no {key}s")


#: Order-state fields a preview may show: the menu choice and the delivery slot. The address and
#: every text stay out even after pseudonymization: the pseudonymizer is documented to miss some
#: PII (names without a cue, partial addresses), and metadata lands in the event log and the UI.
PREVIEW_STATE_FIELDS = ("dinnerType", "servingStyle", "quantity", "deliveryDate", "deliveryTime")


def _session_preview(sessions: list[Session], rows: int = 8) -> MetadataValue:
    """Ids, lineage, sizes, tags and the final order's menu/slot fields: no customer text."""
    table = pa.Table.from_pylist(
        [
            {
                "session_id": s.session_id,
                "source_session_id": s.source_session_id or "",
                "variant": s.variant,
                "turns": len(s.turns),
                "user_chars": sum(len(t.content) for t in s.turns if t.role == "user"),
                "tags": ",".join(s.tags),
                **{f: str((s.final_order_state or {}).get(f, "")) for f in PREVIEW_STATE_FIELDS},
            }
            for s in sessions[:rows]
        ]
    )
    if table.num_rows == 0:
        return MetadataValue.md("(no sessions)")
    return MetadataValue.md(preview_markdown(table, table.column_names, rows=rows, width=80))


# --- cleaned_sessions + rejected_sessions -----------------------------------------------------

CLEANING_CHECKS = [
    AssetCheckSpec(
        "conservation",
        asset="rejected_sessions",
        additional_deps=["cleaned_sessions"],
        blocking=True,
        description=(
            "Every raw session id of the partition is in exactly one of cleaned_sessions or "
            "rejected_sessions, and every raw row is accounted for (kept turn, dropped empty "
            "message, collapsed duplicate or rejected row)."
        ),
    ),
    AssetCheckSpec(
        "rejection_rate",
        asset="rejected_sessions",
        description="Fails when the share of rejected sessions exceeds config max_rejection_rate.",
    ),
    AssetCheckSpec(
        "no_pii",
        asset="cleaned_sessions",
        blocking=True,
        description=(
            "Scans every text, name and address of the pseudonymized output for phone numbers, "
            "e-mail addresses, card numbers, resident registration numbers and each session's own "
            "real customer name and delivery addresses, with the replacer's pattern and with an "
            "independent oracle (libphonenumber, runs of 9+ digits, any x@y.tld shape). On a hit "
            "the table is not stored; the metadata holds hit counts by kind, never a value."
        ),
    ),
]


@multi_asset(
    name="clean_sessions",
    outs={
        "cleaned_sessions": AssetOut(
            is_required=False,  # withheld when the PII scan finds something
            kinds={"python", "parquet"},
            description=(
                "One record per kept session (records.SESSION_SCHEMA): turns ordered by created_at "
                "then id, roles user/assistant, Unicode normalized, retries collapsed, order_state "
                "normalized (unparseable states dropped with a reason), PII pseudonymized "
                "(names/addresses -> consistent Faker ko_KR values, identifiers -> placeholders)."
            ),
        ),
        "rejected_sessions": AssetOut(
            kinds={"python", "parquet"},
            description=(
                "The quarantine: one row per rejected session id (session_id, partition_date, "
                "reason, detail, n_rows); reasons: " + ", ".join(cleaning.REJECTION_REASONS) + "."
            ),
        ),
    },
    ins={"raw": AssetIn("raw_conversation_logs")},
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name=GROUP,
    check_specs=CLEANING_CHECKS,
)
def clean_sessions(context: AssetExecutionContext, config: CleaningRunConfig, raw: pa.Table) -> Iterator[Any]:
    done = stages.clean(raw, cleaning.CleaningConfig(max_message_chars=config.max_message_chars))
    result, cleaned, leaks = done.summary, done.table, dict(done.leaks)  # leak counts only, never values
    rejected = result.rejections_table()
    balance = result.row_balance()
    violations = cleaning.conservation_violations(result.raw_session_ids, done.session_ids, (r.session_id for r in result.rejections))

    yield AssetCheckResult(
        asset_key="cleaned_sessions",
        check_name="no_pii",
        passed=not leaks,
        metadata={"hits_by_kind": MetadataValue.json(leaks), "replaced_by_kind": MetadataValue.json(dict(done.pii.replaced))},
    )
    if not leaks:
        yield Output(
            cleaned,
            output_name="cleaned_sessions",
            metadata={
                "dagster/row_count": cleaned.num_rows,
                "kept_sessions": result.kept_sessions,
                "kept_turns": balance["kept_turns"],
                "dropped_order_states": _md_counts(dict(result.dropped_order_states)),
                "collapsed_duplicates": _md_counts(dict(result.collapsed_duplicates)),
                "dropped_messages": _md_counts(dict(result.dropped_messages)),
                "role_spellings_mapped": MetadataValue.json(dict(result.role_spellings)),
                "pii_replaced": MetadataValue.json(dict(done.pii.replaced)),
                "pii_sessions_touched": done.pii.sessions_touched,
                "scenario_tags": _md_counts(dict(done.tags), "tag"),
                "preview": _session_preview(done.preview),
            },
        )
    yield Output(
        rejected,
        output_name="rejected_sessions",
        metadata={
            "dagster/row_count": rejected.num_rows,
            "rejected_sessions": len(result.rejections),
            "rejection_rate": float(result.rejection_rate),
            "rejections_by_reason": _md_counts(dict(result.rejection_counts)),
            "row_balance": MetadataValue.json(balance),
            "preview": MetadataValue.md(
                preview_markdown(rejected, ["session_id", "reason", "detail", "n_rows"]) if rejected.num_rows else "(none)"
            ),
        },
    )
    yield AssetCheckResult(
        asset_key="rejected_sessions",
        check_name="conservation",
        passed=not any(violations.values()) and balance["unaccounted"] == 0,
        metadata={
            "raw_sessions": len(result.raw_session_ids),
            "cleaned_sessions": result.kept_sessions,
            "rejected_sessions": len(result.rejections),
            **{k: len(v) for k, v in violations.items()},
            "examples": MetadataValue.json({k: v[:5] for k, v in violations.items() if v}),
            "row_balance": MetadataValue.json(balance),
        },
    )
    yield AssetCheckResult(
        asset_key="rejected_sessions",
        check_name="rejection_rate",
        passed=result.rejection_rate <= config.max_rejection_rate,
        metadata={
            "rejection_rate": float(result.rejection_rate),
            "max_rejection_rate": float(config.max_rejection_rate),
            "rejections_by_reason": MetadataValue.json(dict(result.rejection_counts)),
        },
    )


# --- augmented_sessions -----------------------------------------------------------------------

_CHECKLIST_NOTE = (
    " Evaluated on the partition(s) of this run with WARN severity: a nightly run materializes one "
    "day, which may legitimately hold fewer sessions or miss a dinner; the hard gate on the "
    "assembled training set belongs to the dataset assets downstream."
)
AUGMENTATION_CHECKS = [
    AssetCheckSpec(
        "min_sessions",
        asset="augmented_sessions",
        description=f"The guide's checklist: at least {cleaning.MIN_SESSIONS} complete conversation sessions." + _CHECKLIST_NOTE,
    ),
    AssetCheckSpec(
        "menu_coverage",
        asset="augmented_sessions",
        description="All four dinners and all three serving styles appear in some order_state." + _CHECKLIST_NOTE,
    ),
    AssetCheckSpec(
        "complete_flows",
        asset="augmented_sessions",
        description="Complete flows (greeting -> order -> confirmation with every field) are present." + _CHECKLIST_NOTE,
    ),
    AssetCheckSpec(
        "error_handling_examples",
        asset="augmented_sessions",
        description=(
            "Error-handling examples are present: declined out-of-domain questions, unclear input, "
            "the CHAMPAGNE_FEAST+SIMPLE correction." + _CHECKLIST_NOTE
        ),
    ),
    AssetCheckSpec(
        "variants_consistent",
        asset="augmented_sessions",
        description=(
            "Every variant says what its order_state holds: no variant has a date/time/address/name "
            "mismatch that its original did not already have."
        ),
    ),
]


@multi_asset(
    name="augment_sessions",
    outs={
        "augmented_sessions": AssetOut(
            kinds={"python", "parquet"},
            description=(
                "Each cleaned session (variant 0) plus K variants with another customer name, "
                "delivery date/time expressions and address format, changed consistently in user "
                "text, assistant text and order_state; lineage in source_session_id; deterministic "
                "for a seed; exact duplicates dropped (records.SESSION_SCHEMA)."
            ),
        )
    },
    ins={"cleaned_sessions": AssetIn("cleaned_sessions")},
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name=GROUP,
    check_specs=AUGMENTATION_CHECKS,
)
def augment_sessions_asset(context: AssetExecutionContext, config: AugmentationRunConfig, cleaned_sessions: pa.Table) -> Iterator[Any]:
    done = stages.augment(cleaned_sessions, k=config.k, seed=config.seed)
    table, figures, worse = done.table, done.figures, done.worse_variants

    yield Output(
        table,
        output_name="augmented_sessions",
        metadata={
            "dagster/row_count": table.num_rows,
            "source_sessions": done.source_sessions,
            "variants": table.num_rows - done.source_sessions,
            "duplicates_dropped": done.source_sessions * config.k - (table.num_rows - done.source_sessions),
            "k": config.k,
            "seed": config.seed,
            "coverage": _coverage_md(figures),
            "preview": _session_preview(done.preview),
        },
    )
    warn = AssetCheckSeverity.WARN
    yield AssetCheckResult(
        asset_key="augmented_sessions", check_name="min_sessions", severity=warn,
        passed=figures["sessions"] >= cleaning.MIN_SESSIONS,
        metadata={"sessions": figures["sessions"], "source_sessions": figures["source_sessions"], "minimum": cleaning.MIN_SESSIONS},
    )
    yield AssetCheckResult(
        asset_key="augmented_sessions", check_name="menu_coverage", severity=warn,
        passed=not figures["missing_dinners"] and not figures["missing_styles"],
        metadata={
            "dinners": MetadataValue.json(figures["dinners"]),
            "styles": MetadataValue.json(figures["styles"]),
            "missing": MetadataValue.json(figures["missing_dinners"] + figures["missing_styles"]),
        },
    )
    yield AssetCheckResult(
        asset_key="augmented_sessions", check_name="complete_flows", severity=warn,
        passed=figures["complete_flows"] > 0,
        metadata={"complete_flows": figures["complete_flows"], "sessions": figures["sessions"]},
    )
    yield AssetCheckResult(
        asset_key="augmented_sessions", check_name="error_handling_examples", severity=warn,
        passed=figures["error_handling"] > 0,
        metadata={"error_handling": figures["error_handling"], "by_kind": MetadataValue.json(figures["error_handling_by_kind"])},
    )
    yield AssetCheckResult(
        asset_key="augmented_sessions", check_name="variants_consistent",
        passed=not worse,
        metadata={"inconsistent_variants": len(worse), "examples": MetadataValue.json(worse[:5])},
    )


def _coverage_md(figures: dict[str, Any]) -> MetadataValue:
    lines = ["| item | sessions |", "|---|---|"]
    lines += [f"| dinner {k} | {v} |" for k, v in figures["dinners"].items()]
    lines += [f"| style {k} | {v} |" for k, v in figures["styles"].items()]
    lines += [f"| complete flows | {figures['complete_flows']} |"]
    lines += [f"| error handling: {k} | {v} |" for k, v in figures["error_handling_by_kind"].items()]
    lines += [f"| final {k} | {v} |" for k, v in figures["final_combos"].items()]
    return MetadataValue.md("\n".join(lines))
