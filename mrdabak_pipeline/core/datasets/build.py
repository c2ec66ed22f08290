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
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mrdabak_pipeline.core.datasets.chat_format import (
    DEFAULT_VALIDATION_FRACTION,
    TRAIN,
    ChatDataset,
    Target,
)
from mrdabak_pipeline.core.datasets.chat_lines import iter_chat_blocks
from mrdabak_pipeline.core.datasets.dpo import build_preference_dataset
from mrdabak_pipeline.core.datasets.validation import (
    DEFAULT_MODEL,
    ValidationReport,
    estimate_cost,
    iter_jsonl,
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


def write_chat_jsonl(
    sessions: Iterable[Session] | pa.Table,
    out_dir: str | Path,
    *,
    target: Target | str = Target.JSON,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    prompt: PromptKind | str = PromptKind.SHORT,
) -> tuple[ChatDataset, str, str | None]:
    """Stream ``train.jsonl`` / ``validation.jsonl`` into `out_dir`: (counts, train sha256, validation sha256).

    Each example is serialized once and written as it is made (sha256 computed on the way), so
    memory does not grow with the data. Both files are replaced atomically, and only when there
    is at least one training example (else `EmptyDatasetError`, old files untouched); an empty
    validation split removes any stale ``validation.jsonl`` (OpenAI rejects empty files) and its
    sha256 is None.
    """
    out = Path(out_dir)
    train_path, valid_path = out / "train.jsonl", out / "validation.jsonl"
    ds = ChatDataset(target=Target(target).value, validation_fraction=validation_fraction)
    with AtomicJsonlWriter(train_path) as train_w, AtomicJsonlWriter(valid_path) as valid_w:
        for split, block in iter_chat_blocks(sessions, target, validation_fraction, prompt, stats=ds):
            (train_w if split == TRAIN else valid_w).write_block(block)
        if not ds.n_train:
            raise EmptyDatasetError(
                f"no training examples from {len(ds.skipped)} skipped sessions "
                f"(e.g. {ds.skipped[:3]}) and {ds.n_validation} validation examples"
            )
        train_sha = train_w.commit()
        valid_sha = valid_w.commit() if ds.n_validation else None
    if valid_sha is None:
        valid_path.unlink(missing_ok=True)
    return ds, train_sha, valid_sha


def write_openai_dataset(
    sessions: Iterable[Session] | pa.Table,
    out_dir: str | Path,
    *,
    target: Target | str = Target.JSON,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    model: str = DEFAULT_MODEL,
    n_epochs: int | None = None,
    num_threads: int | None = None,
    prompt: PromptKind | str = PromptKind.SHORT,
) -> dict[str, Any]:
    """``train.jsonl`` / ``validation.jsonl`` in OpenAI chat format, validated, counted and priced.

    Written by `write_chat_jsonl` (streaming) and moved to their `content_addressed` paths (the
    value's ``*_path``), then each file is validated by reading it back from disk in chunks: the
    check is of the bytes OpenAI will receive, in flat memory.
    """
    out = Path(out_dir)
    ds, train_sha, valid_sha = write_chat_jsonl(sessions, out, target=target, validation_fraction=validation_fraction, prompt=prompt)
    train_path = content_addressed(out / "train.jsonl", train_sha)
    valid_path = content_addressed(out / "validation.jsonl", valid_sha) if valid_sha else None
    reports = {"train": validate_jsonl(train_path, model, num_threads=num_threads)}
    if valid_path:
        reports["validation"] = validate_jsonl(valid_path, model, num_threads=num_threads)
    cost = estimate_cost(reports["train"], model, n_epochs)
    return {
        "format": "openai-chat",
        "uri": str(out),
        "target": ds.target,
        "prompt_id": prompt_id(prompt),
        "validation_fraction": validation_fraction,
        "train_path": str(train_path),
        "validation_path": str(valid_path) if valid_path else None,
        "train_sha256": train_sha,
        "validation_sha256": valid_sha,
        **ds.counts(),
        "skipped": [{"session_id": s, "reason": r} for s, r in ds.skipped[:MAX_LISTED_SKIPS]],
        "format_ok": all(r.ok for r in reports.values()),
        "reports": {k: r.summary() for k, r in reports.items()},
        "encoding": reports["train"].encoding,
        "train_tokens": cost.billing_tokens_per_epoch,
        "n_epochs": cost.n_epochs,
        "billed_tokens": cost.billed_tokens,
        "usd_per_1m_tokens": cost.usd_per_1m_tokens,
        "estimated_cost_usd": cost.estimated_cost_usd,
        "model": model,
        "warnings": dataset_warnings(ds, reports),
        "data_high_water_mark": format_high_water_mark(ds.high_water_mark) if ds.high_water_mark else None,
    }


def dataset_warnings(ds: ChatDataset, reports: dict[str, ValidationReport]) -> list[str]:
    """Human-readable problems that do not make the files invalid but deserve attention."""
    out: list[str] = []
    if ds.n_train < OPENAI_MIN_TRAIN_EXAMPLES:
        out.append(f"only {ds.n_train} training examples: OpenAI requires at least {OPENAI_MIN_TRAIN_EXAMPLES}")
    if not ds.n_validation:
        out.append("the validation split is empty")
    for split, report in reports.items():
        n = report.warnings.get("too_long", 0)
        if n:
            out.append(
                f"{split}: {n} examples exceed {report.max_tokens_per_example} tokens and WILL BE TRUNCATED "
                f"(lines {report.warning_lines['too_long']})"
            )
    if ds.skipped:
        out.append(f"{len(ds.skipped)} sessions could not become examples (see 'skipped')")
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
