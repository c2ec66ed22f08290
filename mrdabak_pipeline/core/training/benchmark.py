"""Throughput comparison: plain TRL defaults against the padding-saving batch layouts.

Same data, same model, same hyperparameters; only the batch layout changes:
- ``plain``: TRL defaults, no packing, every batch padded to its longest example;
- ``packed``: best-fit-decreasing packing into ``max_length`` rows, padding-free
  (position_ids mark the example boundaries; transformers turns them into a block-diagonal mask,
  so examples never attend to each other, also with SDPA on CPU), one row per micro-batch with
  gradient accumulation, so an epoch takes the same number of optimizer steps as the others;
- ``grouped`` (the default): no padding computed; on CPU one example per micro-batch with
  gradients accumulated over ``batch_size``, on a GPU length-grouped batches.
We report the final losses beside tokens/s: a faster layout that learns less is no win.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mrdabak_pipeline.core.training.config import Throughput, TrainRecipe
from mrdabak_pipeline.core.training.sft import Log, train_sft


def compare_throughput(
    recipe: TrainRecipe,
    dataset_path: str | Path,
    work_dir: str | Path,
    models_dir: str | Path,
    modes: Sequence[Throughput] = ("plain", "packed", "grouped"),
    *,
    log: Log = print,
) -> list[dict[str, Any]]:
    """Train once per mode from scratch (no resume, no checkpoints kept); one result row per mode."""
    rows = []
    for mode in modes:
        out = Path(work_dir) / f"throughput-{mode}"
        shutil.rmtree(out, ignore_errors=True)
        one = recipe.with_settings(throughput=mode, resume=False, save_total_limit=1)
        result = train_sft(one, dataset_path, out, models_dir, log=lambda s, m=mode: log(f"[{m}] {s}"))
        m = result["metrics"]
        rows.append({
            "mode": mode,
            "tokens_per_s": m["tokens_per_s"],
            "train_wall_s": m["train_wall_s"],
            "optimizer_steps": m["global_step"],
            "train_loss": round(m["train_loss"], 4),
            "eval_loss": round(m["eval_loss"], 4) if m["eval_loss"] is not None else None,
            "trained_tokens": m["trained_tokens"],
            "micro_batch": m["micro_batch"],
            "grad_accum_steps": m["grad_accum_steps"],
            "packed_rows": m["packed_rows"],
            "packed_row_length": m["packed_row_length"],
        })
    return rows


def throughput_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of `compare_throughput` rows (for metadata, reports and the CLI)."""
    head = "| mode | tokens/s | wall s | steps | train loss | eval loss |\n|---|---:|---:|---:|---:|---:|\n"
    return head + "".join(
        f"| {r['mode']} | {r['tokens_per_s']} | {r['train_wall_s']} | {r['optimizer_steps']} | "
        f"{r['train_loss']} | {r['eval_loss']} |\n" for r in rows
    )
