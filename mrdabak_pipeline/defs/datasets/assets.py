"""Datasets: augmented sessions -> day shards -> OpenAI chat JSONL, a Hugging Face DatasetDict, DPO pairs.

Thin shell over `core.datasets` (the same functions `mrdabak dataset` calls). ``dataset_shards`` is
daily-partitioned like the sessions: each day's examples are written, checked and token-counted
once, when the day is prepared (`shards.build_shard`). ``openai_chat_dataset`` is assembled from the
stored shards of the window (every stored day, or the last N): lines copied, figures added up, so a
nightly rebuild costs writing the files, not formatting and tokenizing the history again. The
stable hash split keeps each conversation on its side. The format check re-reads the files from
disk and is blocking: a file OpenAI would reject never reaches a fine-tuning asset.
"""


from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from mrdabak_pipeline.core import records
from mrdabak_pipeline.core.datasets.build import (
    assemble_openai_dataset,
    recent_partitions,
    write_huggingface_dataset,
    write_preference_dataset,
)
from mrdabak_pipeline.core.datasets.chat_format import DEFAULT_VALIDATION_FRACTION
from mrdabak_pipeline.core.datasets.shards import build_shard, window_days
from mrdabak_pipeline.core.datasets.validation import (
    DEFAULT_MODEL,
    DISTRIBUTION_STATS,
    FORMAT_ERRORS,
    check_jsonl_format,
    distribution_rows,
)
from mrdabak_pipeline.core.runtime.files import sha256_file
from mrdabak_pipeline.defs.metadata import list_table, table
from mrdabak_pipeline.defs.partitions import DAILY
from mrdabak_pipeline.defs.resources import DataPathsResource

GROUP = "datasets"

TARGET_FIELD = Field(default="json", description="json: the app's {message, orderState} reply (default); text: the reply text only.")
PROMPT_FIELD = Field(
    default="short",
    description="System prompt the examples carry (both with the conversation's date and time): short = role + now "
    "(what a fine-tuned model needs; default), full = the prompt-engineered menu/rules/JSON prompt. "
    "The model records it and is always run with it (mrdabak_pipeline/prompts/).",
)
MODEL_FIELD = Field(default=DEFAULT_MODEL, description="Base model: picks the tokenizer, example limit and price.")


class ShardConfig(dg.Config):
    """What a day's examples look like (every day of a dataset must be built alike)."""

    target: Literal["json", "text"] = TARGET_FIELD
    prompt: Literal["short", "full"] = PROMPT_FIELD
    model: str = MODEL_FIELD


class WindowConfig(dg.Config):
    """Which days go in, and how they are split."""

    window_days: int | None = Field(
        default=None, ge=1,
        description="Use only the last N partition days (counted back from the newest stored one); unset = all.",
    )
    validation_fraction: float = Field(
        default=DEFAULT_VALIDATION_FRACTION, ge=0.0, lt=1.0,
        description="Share of source sessions (with all their variants) held out for validation.",
    )


class OpenAIDatasetConfig(WindowConfig):
    model: str = MODEL_FIELD
    n_epochs: int | None = Field(default=None, ge=1, le=50, description="Epochs for the cost estimate; unset = the API's default heuristic.")


class DatasetConfig(WindowConfig):
    target: Literal["json", "text"] = TARGET_FIELD
    prompt: Literal["short", "full"] = PROMPT_FIELD


@dg.asset(
    **DAILY,
    group_name=GROUP,
    kinds={"python", "parquet"},
    description=(
        "One day's sessions as OpenAI chat examples, one row per session: the JSONL line (or why the session "
        "is not an example), a duplicate flag, the split score, and the validator's figures for the line "
        "(messages, tokens, assistant tokens, format issues). openai_chat_dataset is assembled from these."
    ),
)
def dataset_shards(config: ShardConfig, augmented_sessions: pa.Table) -> dg.Output[pa.Table]:
    shard = build_shard(augmented_sessions, target=config.target, prompt=config.prompt, model=config.model)
    examples = shard.num_rows - shard["line"].null_count
    return dg.Output(
        shard,
        metadata={
            "dagster/row_count": shard.num_rows,
            "examples": examples,
            "skipped_sessions": len(shard["skip_reason"]) - shard["skip_reason"].null_count,
            "tokens": int(pc.sum(shard["n_tokens"]).as_py() or 0),
            "target": config.target,
            "prompt": config.prompt,
        },
    )


def openai_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """What the UI shows for a materialization: where, what, how big, how much."""
    reports = value["reports"]
    enc = value["encoding"]
    return {
        "dagster/uri": dg.MetadataValue.path(value["uri"]),
        "folder": dg.MetadataValue.path(value["uri"]),
        "train_path": dg.MetadataValue.path(value["train_path"]),
        "train_sha256": value["train_sha256"],
        "validation_path": dg.MetadataValue.path(value["validation_path"]) if value["validation_path"] else "(empty)",
        "validation_sha256": value["validation_sha256"] or "",
        "train_examples": value["train_examples"],
        "validation_examples": value["validation_examples"],
        "dagster/row_count": value["train_examples"] + value["validation_examples"],
        "skipped_sessions": value["skipped_sessions"],
        "duplicates_dropped": value["duplicates_dropped"],
        "untrained_assistant_turns": value["untrained_assistant_turns"],
        "train_tokens_per_epoch": value["train_tokens"],
        "n_epochs": value["n_epochs"],
        "billed_tokens": value["billed_tokens"],
        "estimated_cost_usd": float(value["estimated_cost_usd"]) if value["estimated_cost_usd"] is not None else float("nan"),
        "model": value["model"],
        "encoding": f"{enc['encoding_used']} via {enc['encoding_source']} (model uses {enc['model_encoding']})",
        "token_count_exact": bool(enc["exact"]),
        "n_too_long": sum(r["n_too_long"] for r in reports.values()),
        "distributions": table(
            distribution_rows((k, r["distributions"]) for k, r in reports.items()),
            ["split", "per_example", *DISTRIBUTION_STATS],
        ),
        "warnings": list_table(value["warnings"], "warning"),
        "target": value["target"],
        "prompt_id": value["prompt_id"],
        "data_high_water_mark": value["data_high_water_mark"] or "",
    }


@dg.asset(
    # lazy: the IO manager hands over a loader per stored day, and only the window's days are read
    ins={"dataset_shards": dg.AssetIn(metadata={"lazy": True}, dagster_type=dg.Any)},
    group_name=GROUP,
    kinds={"python", "openai"},
    description=(
        "train.jsonl / validation.jsonl in OpenAI chat fine-tuning format under data/datasets/openai, assembled from "
        "the stored day shards of the window: system prompt (a versioned template from mrdabak_pipeline/prompts with "
        "the conversation's date and time) + turns; assistant target = the app's JSON or the text. "
        "Split by a stable hash of the source session id. Validated with OpenAI's checks, token-counted "
        "(tiktoken, offline-capable) and priced; value: paths, sha256s, counts, tokens, cost, "
        "data_high_water_mark."
    ),
)
def openai_chat_dataset(
    context: dg.AssetExecutionContext, config: OpenAIDatasetConfig, data_paths: DataPathsResource,
    dataset_shards: dict[str, Callable[[], pa.Table]],
) -> dg.Output[dict[str, Any]]:
    days = window_days(dataset_shards, config.window_days)
    value = assemble_openai_dataset(
        (dataset_shards[day]() for day in days),  # one day in memory at a time
        data_paths.sub("datasets") / "openai",
        validation_fraction=config.validation_fraction,
        model=config.model,
        n_epochs=config.n_epochs,
    )
    for warning in value["warnings"]:
        context.log.warning(warning)
    return dg.Output(value, metadata={**openai_metadata(value), "days": len(days)})


@dg.asset(
    group_name=GROUP,
    kinds={"python", "huggingface"},
    description=(
        "The same examples as openai_chat_dataset as a datasets.DatasetDict (train/validation, "
        "'messages' column) saved with save_to_disk, plus JSONL copies, in a content-addressed "
        "folder under data/datasets/huggingface. Value: path, jsonl paths, counts, data_high_water_mark."
    ),
)
def huggingface_dataset(data_paths: DataPathsResource, openai_chat_dataset: dict[str, Any]) -> dg.Output[dict[str, Any]]:
    source = openai_chat_dataset
    for split in ("train", "validation"):
        path = source[f"{split}_path"]
        if path and sha256_file(Path(path)) != source[f"{split}_sha256"]:
            raise RuntimeError(f"{path} changed since openai_chat_dataset was materialized: materialize it again")
    value = write_huggingface_dataset(source["train_path"], source["validation_path"], data_paths.sub("datasets") / "huggingface")
    value.update(target=source["target"], prompt_id=source["prompt_id"], data_high_water_mark=source["data_high_water_mark"])
    return dg.Output(
        value,
        metadata={
            "dagster/uri": dg.MetadataValue.path(value["path"]),
            "path": dg.MetadataValue.path(value["path"]),
            "train_jsonl": dg.MetadataValue.path(value["train_jsonl"]),
            "validation_jsonl": dg.MetadataValue.path(value["validation_jsonl"]),
            "sha256": value["sha256"],
            "train_examples": value["train_examples"],
            "validation_examples": value["validation_examples"],
            "dagster/row_count": value["train_examples"] + value["validation_examples"],
            "prompt_id": value["prompt_id"],
            "data_high_water_mark": value["data_high_water_mark"] or "",
        },
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "openai"},
    description=(
        "Preference pairs from corrected assistant turns (the customer said it was wrong, or the "
        "next assistant turn fixed the order state), as OpenAI DPO records and TRL prompt/chosen/"
        "rejected records, split like the chat dataset. No pairs is a normal outcome."
    ),
)
def dpo_dataset(context: dg.AssetExecutionContext, config: DatasetConfig, data_paths: DataPathsResource, augmented_sessions: pa.Table) -> dg.Output[dict[str, Any]]:
    value = write_preference_dataset(
        records.sessions_from_table(recent_partitions(augmented_sessions, config.window_days)),
        data_paths.sub("datasets") / "dpo",
        target=config.target,
        validation_fraction=config.validation_fraction,
        prompt=config.prompt,
    )
    if not value["pair_count"]:
        context.log.info("no corrected assistant turns in the data: the DPO dataset is empty")
    return dg.Output(
        value,
        metadata={
            "dagster/uri": dg.MetadataValue.path(value["uri"]),
            "folder": dg.MetadataValue.path(value["uri"]),
            "pair_count": value["pair_count"],
            "train_pairs": value["train_pairs"],
            "validation_pairs": value["validation_pairs"],
            "openai_train_sha256": value["openai_train_sha256"] or "",
        },
    )


@dg.asset_check(
    asset=openai_chat_dataset,
    blocking=True,
    description=(
        "Re-reads train/validation JSONL from disk: the sha256 matches the materialization and "
        "OpenAI's chat-format checks find no error (" + ", ".join(FORMAT_ERRORS) + "). "
        "Blocking: a failure stops the fine-tuning assets."
    ),
)
def openai_chat_format(openai_chat_dataset: dict[str, Any]) -> dg.AssetCheckResult:
    problems: list[str] = []
    counts: dict[str, int] = dict.fromkeys(FORMAT_ERRORS, 0)
    for split in ("train", "validation"):
        path = openai_chat_dataset[f"{split}_path"]
        if path is None:
            continue
        if not Path(path).exists():
            problems.append(f"{split}: {path} is missing")
            continue
        if sha256_file(Path(path)) != openai_chat_dataset[f"{split}_sha256"]:
            problems.append(f"{split}: {path} changed since materialization")
        _n, errors, lines = check_jsonl_format(path)
        for code, n in errors.items():
            counts[code] += n
            problems.append(f"{split}: {n} x {code} ({FORMAT_ERRORS[code]}), lines {lines[code]}")
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={**{f"errors_{k}": v for k, v in counts.items()}, "problems": list_table(problems, "problem")},
    )


@dg.asset_check(
    asset=openai_chat_dataset,
    description="Warns when examples exceed the model's per-example token limit (they would be truncated) "
    "or when the training file has fewer than the 10 examples OpenAI requires.",
)
def openai_chat_token_limits(openai_chat_dataset: dict[str, Any]) -> dg.AssetCheckResult:
    too_long = {split: r["n_too_long"] for split, r in openai_chat_dataset["reports"].items()}
    few = openai_chat_dataset["train_examples"] < 10
    return dg.AssetCheckResult(
        passed=not any(too_long.values()) and not few,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            **{f"too_long_{k}": v for k, v in too_long.items()},
            "train_examples": openai_chat_dataset["train_examples"],
            "warnings": list_table(openai_chat_dataset["warnings"], "warning"),
        },
    )


@dg.asset_check(
    asset=huggingface_dataset,
    blocking=True,
    description="load_from_disk works, both splits have a 'messages' column and the stored row counts.",
)
def huggingface_loadable(huggingface_dataset: dict[str, Any]) -> dg.AssetCheckResult:
    from datasets import DatasetDict, load_from_disk

    try:
        dd = load_from_disk(huggingface_dataset["path"])
    except Exception as exc:  # a broken folder is the failure this check exists to report
        return dg.AssetCheckResult(passed=False, metadata={"error": f"{type(exc).__name__}: {exc}"})
    ok = (
        isinstance(dd, DatasetDict)
        and {"train", "validation"} <= set(dd)
        and all("messages" in dd[s].column_names for s in dd)
        and len(dd["train"]) == huggingface_dataset["train_examples"]
        and len(dd["validation"]) == huggingface_dataset["validation_examples"]
    )
    return dg.AssetCheckResult(
        passed=bool(ok), metadata={"splits": ", ".join(f"{k}={len(v)}" for k, v in dd.items())}
    )
