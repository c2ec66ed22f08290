"""Write the dataset files: one function per format, shared by the Dagster assets and the CLI.

Each returns the JSON-able dict that is the asset's value (paths, sha256s, counts, token and cost
figures, the data high-water mark), so `mrdabak dataset` and a materialization produce the same
files from the same sessions, byte for byte.

Every file a value points at is content-addressed: ``<out>/sha256/<its sha256>/<name>`` (the Hugging
Face folder is named after its two files' hashes). A newer build never rewrites a file an older
value (a running training or upload job) still points at, and a path's hash is its bytes' sha256, so
an upload carries exactly the bytes its name promises. The fixed names (``<out>/train.jsonl``,
``<out>/dpo/trl_train.jsonl``...) stay as symlinks to the latest build, for people and benchmarks.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mrdabak_pipeline.core.datasets.chat_format import DEFAULT_VALIDATION_FRACTION, TRAIN, VALIDATION, Target
from mrdabak_pipeline.core.datasets.dpo import build_preference_dataset
from mrdabak_pipeline.core.datasets.shards import jsonl_bytes, shard_settings, shards_of
from mrdabak_pipeline.core.datasets.tokens import model_encoding_name
from mrdabak_pipeline.core.datasets.validation import (
    DEFAULT_MODEL,
    ValidationReport,
    estimate_cost,
    iter_jsonl,
    report_of_examples,
    validate_jsonl,
)
from mrdabak_pipeline.core.domain import Session
from mrdabak_pipeline.core.prompts import PromptKind, prompt_id
from mrdabak_pipeline.core.runtime.files import AtomicJsonlWriter, atomic_directory, sha256_file, write_jsonl
from mrdabak_pipeline.core.training.retrain_policy import format_high_water_mark

#: OpenAI refuses a training file with fewer examples than this.
OPENAI_MIN_TRAIN_EXAMPLES = 10
#: How many skipped sessions are listed by id in the value (all are counted).
MAX_LISTED_SKIPS = 50


#: The sub-folder of a dataset folder holding each written file under its own sha256.
CONTENT_DIR = "sha256"


def content_addressed(path: Path, sha256: str) -> Path:
    """Move the just-written `path` to ``<its folder>/sha256/<sha256>/<its name>`` and leave a
    relative symlink at `path` (the latest build under its fixed name). Same bytes as an earlier
    build: that file is kept and the new copy dropped. Returns the content-addressed path."""
    path = Path(path)
    folder = atomic_directory(path.parent / CONTENT_DIR / sha256, lambda tmp: os.replace(path, tmp / path.name))
    target = folder / path.name
    if path.exists() and not path.is_symlink():  # the folder already existed: identical bytes
        path.unlink()
    link = path.with_name(f".{path.name}.link")
    link.unlink(missing_ok=True)
    link.symlink_to(target.relative_to(path.parent))
    os.replace(link, path)  # the pointer moves atomically: never a moment without one
    return target


class EmptyDatasetError(ValueError):
    """No session could become a training example: nothing to write."""


def recent_partitions(table: pa.Table, days: int | None) -> pa.Table:
    """Rows of the last `days` partition days, counted back from the newest partition present.

    Anchored on the data rather than on today, so rebuilding from the same stored partitions
    gives the same dataset whenever it runs. ``None`` keeps everything.
    """
    if days is None or table.num_rows == 0:
        return table
    if days < 1:
        raise ValueError(f"window must be at least 1 day, got {days}")
    newest = date.fromisoformat(pc.max(table["partition_date"]).as_py())
    first = (newest - timedelta(days=days - 1)).isoformat()
    return table.filter(pc.greater_equal(table["partition_date"], first))


def _write_split(path: Path, examples: Sequence[dict[str, Any]]) -> str | None:
    """Write a split, or remove a stale file when the split is empty (OpenAI rejects empty files)."""
    if not examples:
        path.unlink(missing_ok=True)
        return None
    return write_jsonl(path, examples)


@dataclass
class _Split:
    """What the assembly gathers of one split: its examples' figures, in file order."""

    n_messages: list[int] = field(default_factory=list)
    n_tokens: list[int] = field(default_factory=list)
    n_assistant_tokens: list[int] = field(default_factory=list)
    issues: list[list[str]] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)


def assemble_openai_dataset(
    shards: Iterable[pa.Table],
    out_dir: str | Path,
    *,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    model: str = DEFAULT_MODEL,
    n_epochs: int | None = None,
) -> dict[str, Any]:
    """``train.jsonl`` / ``validation.jsonl`` in OpenAI chat format from day shards (`shards.build_shard`,
    oldest first), with their validation report, token counts and cost; the asset's value.

    The lines are copied shard by shard (memory holds one day), so the cost is writing the files;
    the report adds up what the validator said of each line when its day was prepared (it is
    `validate_jsonl` of the files, tested), unless the model counts tokens with another encoding
    than the shards were counted with: then the written files are validated again. Both files are
    replaced atomically, only when there is at least one training example (else
    `EmptyDatasetError`), and moved to their `content_addressed` paths (the value's ``*_path``).
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    out = Path(out_dir)
    splits = {TRAIN: _Split(), VALIDATION: _Split()}
    settings: dict[str, Any] = {}
    skipped: list[dict[str, str]] = []
    n_skipped = duplicates = untrained = 0
    newest = None
    with AtomicJsonlWriter(out / "train.jsonl") as train_w, AtomicJsonlWriter(out / "validation.jsonl") as valid_w:
        for shard in shards:
            if not shard.num_rows:
                continue
            mine = shard_settings(shard)
            if settings and {k: mine[k] for k in ("target", "prompt_id")} != {k: settings[k] for k in ("target", "prompt_id")}:
                raise ValueError(f"shards of {shard['partition_date'][0]} were built with {mine['target']}/{mine['prompt_id']}, "
                                 f"earlier ones with {settings['target']}/{settings['prompt_id']}: materialize dataset_shards again")
            settings = settings or mine
            reasons = shard.filter(pc.is_valid(shard["skip_reason"]))
            n_skipped += reasons.num_rows
            skipped += [{"session_id": i, "reason": r} for i, r in zip(reasons["session_id"].to_pylist(), reasons["skip_reason"].to_pylist(), strict=True)][: MAX_LISTED_SKIPS - len(skipped)]
            duplicates += pc.sum(shard["duplicate"]).as_py() or 0
            examples = shard.filter(pc.and_(pc.is_valid(shard["line"]), pc.invert(shard["duplicate"])))
            if not examples.num_rows:
                continue
            untrained += pc.sum(examples["untrained"]).as_py() or 0
            # logged conversations only: an augmented variant happens on a moved day (augment.py)
            last = pc.max(examples.filter(pc.equal(examples["session_id"], examples["source_session_id"]))["created_at"]).as_py()
            newest = last if newest is None or (last is not None and last > newest) else newest
            is_validation = pc.less(examples["split_score"], validation_fraction)
            for split, writer, rows in ((TRAIN, train_w, examples.filter(pc.invert(is_validation))), (VALIDATION, valid_w, examples.filter(is_validation))):
                if not rows.num_rows:
                    continue
                writer.write_block(jsonl_bytes(rows["line"].combine_chunks()))
                gathered = splits[split]
                for name in ("n_messages", "n_tokens", "n_assistant_tokens", "issues"):
                    getattr(gathered, name).extend(rows[name].to_pylist())
                gathered.sources.update(rows["source_session_id"].to_pylist())
        n_train, n_valid = len(splits[TRAIN].n_tokens), len(splits[VALIDATION].n_tokens)
        if not n_train:
            raise EmptyDatasetError(f"no training examples from {n_skipped} skipped sessions (e.g. {skipped[:3]}) and {n_valid} validation examples")
        train_sha = train_w.commit()
        valid_sha = valid_w.commit() if n_valid else None
    if valid_sha is None:
        (out / "validation.jsonl").unlink(missing_ok=True)
    train_path = content_addressed(out / "train.jsonl", train_sha)
    valid_path = content_addressed(out / "validation.jsonl", valid_sha) if valid_sha else None
    reports = {TRAIN: _report(splits[TRAIN], train_path, settings["encoding"], model)}
    if valid_path:
        reports[VALIDATION] = _report(splits[VALIDATION], valid_path, settings["encoding"], model)
    cost = estimate_cost(reports[TRAIN], model, n_epochs)
    counts = {
        "train_examples": n_train,
        "validation_examples": n_valid,
        "train_source_sessions": len(splits[TRAIN].sources),
        "validation_source_sessions": len(splits[VALIDATION].sources),
        "skipped_sessions": n_skipped,
        "duplicates_dropped": duplicates,
        "untrained_assistant_turns": untrained,
    }
    return {
        "format": "openai-chat",
        "uri": str(out),
        "target": settings["target"],
        "prompt_id": settings["prompt_id"],
        "validation_fraction": validation_fraction,
        "train_path": str(train_path),
        "validation_path": str(valid_path) if valid_path else None,
        "train_sha256": train_sha,
        "validation_sha256": valid_sha,
        **counts,
        "skipped": skipped,
        "format_ok": all(r.ok for r in reports.values()),
        "reports": {k: r.summary() for k, r in reports.items()},
        "encoding": reports[TRAIN].encoding,
        "train_tokens": cost.billing_tokens_per_epoch,
        "n_epochs": cost.n_epochs,
        "billed_tokens": cost.billed_tokens,
        "usd_per_1m_tokens": cost.usd_per_1m_tokens,
        "estimated_cost_usd": cost.estimated_cost_usd,
        "model": model,
        "warnings": dataset_warnings(counts, reports),
        "data_high_water_mark": format_high_water_mark(newest) if newest else None,
    }


def _report(split: _Split, path: Path, encoding: dict[str, Any], model: str) -> ValidationReport:
    """The split's report from its shards' figures, or from the file when the model counts with another encoding."""
    if encoding.get("model_encoding") != model_encoding_name(model)[0]:
        return validate_jsonl(path, model)
    return report_of_examples(split.n_messages, split.n_tokens, split.n_assistant_tokens, split.issues, model, {**encoding, "model": model})


def write_openai_dataset(
    sessions: Iterable[Session] | pa.Table,
    out_dir: str | Path,
    *,
    target: Target | str = Target.JSON,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    model: str = DEFAULT_MODEL,
    n_epochs: int | None = None,
    prompt: PromptKind | str = PromptKind.SHORT,
) -> dict[str, Any]:
    """`assemble_openai_dataset` of the day shards of `sessions`: what ``mrdabak dataset`` writes,
    the same files the assets write from the same sessions."""
    shards = shards_of(sessions, target=target, prompt=prompt, model=model)
    return assemble_openai_dataset(shards, out_dir, validation_fraction=validation_fraction, model=model, n_epochs=n_epochs)


def dataset_warnings(counts: dict[str, int], reports: dict[str, ValidationReport]) -> list[str]:
    """Human-readable problems that do not make the files invalid but deserve attention."""
    out: list[str] = []
    if counts["train_examples"] < OPENAI_MIN_TRAIN_EXAMPLES:
        out.append(f"only {counts['train_examples']} training examples: OpenAI requires at least {OPENAI_MIN_TRAIN_EXAMPLES}")
    if not counts["validation_examples"]:
        out.append("the validation split is empty")
    for split, report in reports.items():
        n = report.warnings.get("too_long", 0)
        if n:
            out.append(
                f"{split}: {n} examples exceed {report.max_tokens_per_example} tokens and WILL BE TRUNCATED "
                f"(lines {report.warning_lines['too_long']})"
            )
    if counts["skipped_sessions"]:
        out.append(f"{counts['skipped_sessions']} sessions could not become examples (see 'skipped')")
    return out


def _hf_features() -> Any:
    from datasets import Features, Value

    message = {"role": Value("string"), "content": Value("string"), "weight": Value("int64")}
    return Features({"messages": [message]})


def write_huggingface_dataset(train_jsonl: str | Path, validation_jsonl: str | Path | None, out_root: str | Path) -> dict[str, Any]:
    """The OpenAI files as a ``datasets.DatasetDict`` (``messages`` column) plus JSONL copies.

    The folder is named after the content hash of the two files, so a training run reading an
    older version is never disturbed by a new materialization, and rebuilding identical data is a
    no-op. An empty validation split is still saved (with the same columns) so loaders see both.
    """
    from datasets import Dataset, DatasetDict

    train_sha = sha256_file(Path(train_jsonl))
    valid_sha = sha256_file(Path(validation_jsonl)) if validation_jsonl else ""
    digest = hashlib.sha256(f"{train_sha}:{valid_sha}".encode()).hexdigest()
    splits = {"train": train_jsonl, "validation": validation_jsonl}

    def fill(tmp: Path) -> None:
        features = _hf_features()
        rows = {k: [obj for _, obj in iter_jsonl(p)] if p else [] for k, p in splits.items()}
        for name, source in splits.items():
            if source:  # the files are already JSONL in our one format: copy, do not re-serialize
                shutil.copyfile(source, tmp / f"{name}.jsonl")
            else:
                write_jsonl(tmp / f"{name}.jsonl", [])
        # from_dict, not from_list: an empty from_list loses its columns in the saved Arrow file
        dd = DatasetDict(
            {k: Dataset.from_dict({"messages": [r["messages"] for r in v]}, features=features) for k, v in rows.items()}
        )
        # an empty split would be saved with zero shards, which load_from_disk cannot read back
        dd.save_to_disk(str(tmp / "dataset"), num_shards={k: 1 for k, v in rows.items() if not v})

    folder = atomic_directory(Path(out_root) / digest[:16], fill)
    return {
        "format": "huggingface",
        "uri": str(folder / "dataset"),
        "path": str(folder / "dataset"),
        "train_jsonl": str(folder / "train.jsonl"),
        "validation_jsonl": str(folder / "validation.jsonl"),
        "sha256": digest,
        "train_examples": sum(1 for _ in iter_jsonl(folder / "train.jsonl")),
        "validation_examples": sum(1 for _ in iter_jsonl(folder / "validation.jsonl")),
    }


def write_preference_dataset(
    sessions: Iterable[Session],
    out_dir: str | Path,
    *,
    target: Target | str = Target.JSON,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    prompt: PromptKind | str = PromptKind.SHORT,
) -> dict[str, Any]:
    """DPO pairs as OpenAI (``openai_*.jsonl``) and TRL (``trl_*.jsonl``) files, `content_addressed`;
    no pairs is fine (the split's path is None and its fixed-name pointer is removed)."""
    pref = build_preference_dataset(sessions, target, validation_fraction, prompt)
    out = Path(out_dir)
    value: dict[str, Any] = {"format": "dpo", "uri": str(out), "target": Target(target).value, "prompt_id": prompt_id(prompt), **pref.counts()}
    value["pair_count"] = len(pref.train) + len(pref.validation)
    for split, pairs in (("train", pref.train), ("validation", pref.validation)):
        for flavour, records in (
            ("openai", [p.openai_record() for p in pairs]),
            ("trl", [p.trl_record() for p in pairs]),
        ):
            path = out / f"{flavour}_{split}.jsonl"
            sha = _write_split(path, records)
            value[f"{flavour}_{split}_path"] = str(content_addressed(path, sha)) if sha else None
            value[f"{flavour}_{split}_sha256"] = sha
    return value
