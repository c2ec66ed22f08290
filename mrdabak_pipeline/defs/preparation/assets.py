"""Preparation: raw rows -> cleaned + quarantined sessions (PII pseudonymized) -> augmented variants.

Thin shell over `core.stages` (cleaning, PII and augmentation, chunked over the cores). The
checks are evaluated inside the asset ops (`check_specs`), on the values that are about to be
stored, so no table is read twice and the PII scan can stop a leak before it reaches disk.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import Field

from mrdabak_pipeline.core.domain import Session
from mrdabak_pipeline.core.prepare import cleaning, stages
from mrdabak_pipeline.defs.metadata import arrow_preview, counts_table, table
from mrdabak_pipeline.defs.partitions import DAILY

GROUP = "preparation"


class CleaningRunConfig(dg.Config):
    """Thresholds of the cleaning step."""

    max_message_chars: int = Field(default=2000, description="Longer messages quarantine their session (message_too_long).")
    max_rejection_rate: float = Field(
        default=0.25, description="The rejection_rate check fails above this share of rejected sessions."
    )


class AugmentationRunConfig(dg.Config):
    """How many variants per session, and the seed that makes them reproducible."""

    k: int = Field(default=3, ge=0, description="Variants per cleaned session, in addition to the original.")
    seed: int = Field(default=42, description="Same seed, same variants.")


#: Order-state fields a preview may show: the menu choice and the delivery slot. The address and
#: every text stay out even after pseudonymization: the pseudonymizer is documented to miss some
#: PII (names without a cue, partial addresses), and metadata lands in the event log and the UI.
PREVIEW_STATE_FIELDS = ("dinnerType", "servingStyle", "quantity", "deliveryDate", "deliveryTime")
SESSION_PREVIEW_COLUMNS = ("session_id", "source_session_id", "variant", "turns", "user_chars", "tags", *PREVIEW_STATE_FIELDS)
#: The quarantine preview: ids, the rejection reason and its (value-free) detail, sizes.
REJECTED_PREVIEW_COLUMNS = ("session_id", "reason", "detail", "n_rows")


def _session_preview(sessions: list[Session], rows: int = 8) -> dg.TableMetadataValue:
    """Ids, lineage, sizes, tags and the final order's menu/slot fields: no customer text."""
    return table(
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
        ],
        SESSION_PREVIEW_COLUMNS,
    )


# --- cleaned_sessions + rejected_sessions -----------------------------------------------------

CLEANING_CHECKS = [
    dg.AssetCheckSpec(
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
    dg.AssetCheckSpec(
        "rejection_rate",
        asset="rejected_sessions",
        description="Fails when the share of rejected sessions exceeds config max_rejection_rate.",
    ),
    dg.AssetCheckSpec(
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


@dg.multi_asset(
    name="clean_sessions",
    outs={
        "cleaned_sessions": dg.AssetOut(
            is_required=False,  # withheld when the PII scan finds something
            kinds={"python", "parquet"},
            description=(
                "One record per kept session (records.SESSION_SCHEMA): turns ordered by created_at "
                "then id, roles user/assistant, Unicode normalized, retries collapsed, order_state "
                "normalized (unparseable states dropped with a reason), PII pseudonymized "
                "(names/addresses -> consistent Faker ko_KR values, identifiers -> placeholders)."
            ),
        ),
        "rejected_sessions": dg.AssetOut(
            kinds={"python", "parquet"},
            description=(
                "The quarantine: one row per rejected session id (session_id, partition_date, "
                "reason, detail, n_rows); reasons: " + ", ".join(cleaning.REJECTION_REASONS) + "."
            ),
        ),
    },
    ins={"raw": dg.AssetIn("raw_conversation_logs")},
    **DAILY,
    group_name=GROUP,
    check_specs=CLEANING_CHECKS,
)
def clean_sessions(context: dg.AssetExecutionContext, config: CleaningRunConfig, raw: pa.Table) -> Iterator[Any]:
    done = stages.clean(raw, cleaning.CleaningConfig(max_message_chars=config.max_message_chars))
    result, cleaned, leaks = done.summary, done.table, dict(done.leaks)  # leak counts only, never values
    rejected = result.rejections_table()
    balance = result.row_balance()
    violations = cleaning.conservation_violations(result.raw_session_ids, done.session_ids, (r.session_id for r in result.rejections))

    yield dg.AssetCheckResult(
        asset_key="cleaned_sessions",
        check_name="no_pii",
        passed=not leaks,
        metadata={"hits_by_kind": dg.MetadataValue.json(leaks), "replaced_by_kind": dg.MetadataValue.json(dict(done.pii.replaced))},
    )
    if not leaks:
        yield dg.Output(cleaned, output_name="cleaned_sessions", metadata={
            "dagster/row_count": cleaned.num_rows,
            "kept_sessions": result.kept_sessions,
            "kept_turns": balance["kept_turns"],
            "dropped_order_states": counts_table(result.dropped_order_states, "reason"),
            "collapsed_duplicates": counts_table(result.collapsed_duplicates, "reason"),
            "dropped_messages": counts_table(result.dropped_messages, "reason"),
            "role_spellings_mapped": dg.MetadataValue.json(dict(result.role_spellings)),
            "pii_replaced": dg.MetadataValue.json(dict(done.pii.replaced)),
            "pii_sessions_touched": done.pii.sessions_touched,
            "scenario_tags": counts_table(done.tags, "tag"),
            "preview": _session_preview(done.preview),
        })
    yield dg.Output(
        rejected,
        output_name="rejected_sessions",
        metadata={
            "dagster/row_count": rejected.num_rows,
            "rejected_sessions": len(result.rejections),
            "rejection_rate": float(result.rejection_rate),
            "rejections_by_reason": counts_table(result.rejection_counts, "reason"),
            "row_balance": dg.MetadataValue.json(balance),
            "preview": arrow_preview(rejected, REJECTED_PREVIEW_COLUMNS),
        },
    )
    yield dg.AssetCheckResult(
        asset_key="rejected_sessions",
        check_name="conservation",
        passed=not any(violations.values()) and balance["unaccounted"] == 0,
        metadata={
            "raw_sessions": len(result.raw_session_ids),
            "cleaned_sessions": result.kept_sessions,
            "rejected_sessions": len(result.rejections),
            **{k: len(v) for k, v in violations.items()},
            "examples": dg.MetadataValue.json({k: v[:5] for k, v in violations.items() if v}),
            "row_balance": dg.MetadataValue.json(balance),
        },
    )
    yield dg.AssetCheckResult(
        asset_key="rejected_sessions",
        check_name="rejection_rate",
        passed=result.rejection_rate <= config.max_rejection_rate,
        metadata={
            "rejection_rate": float(result.rejection_rate),
            "max_rejection_rate": float(config.max_rejection_rate),
            "rejections_by_reason": dg.MetadataValue.json(dict(result.rejection_counts)),
        },
    )


# --- augmented_sessions -----------------------------------------------------------------------

_CHECKLIST_NOTE = (
    " Evaluated on the partition(s) of this run with WARN severity: a nightly run materializes one "
    "day, which may legitimately hold fewer sessions or miss a dinner; the hard gate on the "
    "assembled training set belongs to the dataset assets downstream."
)
AUGMENTATION_CHECKS = [
    dg.AssetCheckSpec(
        "min_sessions",
        asset="augmented_sessions",
        description=f"The guide's checklist: at least {cleaning.MIN_SESSIONS} complete conversation sessions." + _CHECKLIST_NOTE,
    ),
    dg.AssetCheckSpec(
        "menu_coverage",
        asset="augmented_sessions",
        description="All four dinners and all three serving styles appear in some order_state." + _CHECKLIST_NOTE,
    ),
    dg.AssetCheckSpec(
        "complete_flows",
        asset="augmented_sessions",
        description="Complete flows (greeting -> order -> confirmation with every field) are present." + _CHECKLIST_NOTE,
    ),
    dg.AssetCheckSpec(
        "error_handling_examples",
        asset="augmented_sessions",
        description=(
            "Error-handling examples are present: declined out-of-domain questions, unclear input, "
            "the CHAMPAGNE_FEAST+SIMPLE correction." + _CHECKLIST_NOTE
        ),
    ),
    dg.AssetCheckSpec(
        "variants_consistent",
        asset="augmented_sessions",
        description=(
            "Every variant says what its order_state holds: no variant has a date/time/address/name "
            "mismatch that its original did not already have."
        ),
    ),
]


@dg.multi_asset(
    name="augment_sessions",
    outs={
        "augmented_sessions": dg.AssetOut(
            kinds={"python", "parquet"},
            description=(
                "Each cleaned session (variant 0) plus K variants with another customer name, "
                "delivery date/time expressions and address format, changed consistently in user "
                "text, assistant text and order_state; lineage in source_session_id; deterministic "
                "for a seed; exact duplicates dropped (records.SESSION_SCHEMA)."
            ),
        )
    },
    ins={"cleaned_sessions": dg.AssetIn("cleaned_sessions")},
    **DAILY,
    group_name=GROUP,
    check_specs=AUGMENTATION_CHECKS,
)
def augment_sessions_asset(context: dg.AssetExecutionContext, config: AugmentationRunConfig, cleaned_sessions: pa.Table) -> Iterator[Any]:
    done = stages.augment(cleaned_sessions, k=config.k, seed=config.seed)
    table, figures, worse = done.table, done.figures, done.worse_variants

    yield dg.Output(table, output_name="augmented_sessions", metadata={
        "dagster/row_count": table.num_rows,
        "source_sessions": done.source_sessions,
        "variants": table.num_rows - done.source_sessions,
        "duplicates_dropped": done.source_sessions * config.k - (table.num_rows - done.source_sessions),
        "k": config.k,
        "seed": config.seed,
        "coverage": _coverage_table(figures),
        "preview": _session_preview(done.preview),
    })
    warn = dg.AssetCheckSeverity.WARN
    yield dg.AssetCheckResult(
        asset_key="augmented_sessions", check_name="min_sessions", severity=warn,
        passed=figures["sessions"] >= cleaning.MIN_SESSIONS,
        metadata={"sessions": figures["sessions"], "source_sessions": figures["source_sessions"], "minimum": cleaning.MIN_SESSIONS},
    )
    yield dg.AssetCheckResult(
        asset_key="augmented_sessions", check_name="menu_coverage", severity=warn,
        passed=not figures["missing_dinners"] and not figures["missing_styles"],
        metadata={
            "dinners": dg.MetadataValue.json(figures["dinners"]),
            "styles": dg.MetadataValue.json(figures["styles"]),
            "missing": dg.MetadataValue.json(figures["missing_dinners"] + figures["missing_styles"]),
        },
    )
    yield dg.AssetCheckResult(
        asset_key="augmented_sessions", check_name="complete_flows", severity=warn,
        passed=figures["complete_flows"] > 0,
        metadata={"complete_flows": figures["complete_flows"], "sessions": figures["sessions"]},
    )
    yield dg.AssetCheckResult(
        asset_key="augmented_sessions", check_name="error_handling_examples", severity=warn,
        passed=figures["error_handling"] > 0,
        metadata={"error_handling": figures["error_handling"], "by_kind": dg.MetadataValue.json(figures["error_handling_by_kind"])},
    )
    yield dg.AssetCheckResult(
        asset_key="augmented_sessions", check_name="variants_consistent",
        passed=not worse,
        metadata={"inconsistent_variants": len(worse), "examples": dg.MetadataValue.json(worse[:5])},
    )


def _coverage_table(figures: dict[str, Any]) -> dg.TableMetadataValue:
    """Sessions per dinner, style, flow kind and final combination: one ``item | sessions`` table."""
    rows = [("dinner " + k, v) for k, v in figures["dinners"].items()]
    rows += [("style " + k, v) for k, v in figures["styles"].items()]
    rows += [("complete flows", figures["complete_flows"])]
    rows += [("error handling: " + k, v) for k, v in figures["error_handling_by_kind"].items()]
    rows += [("final " + k, v) for k, v in figures["final_combos"].items()]
    return table([{"item": item, "sessions": n} for item, n in rows], ["item", "sessions"])
