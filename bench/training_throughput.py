"""Figure 3: training throughput of the project's training op vs plain TRL defaults.

Both sides call the real `core.training.sft.train_sft` on the same tiny model, data, epochs, seed
and threads; only ``TrainParams.throughput`` differs: ``"plain"`` is TRL's default (no packing,
pad to the longest in the batch), ``"packed"`` is the project's setting (best-fit packing with
padding-free batches). Throughput counts *real* tokens (the chat-templated dialogs, no padding),
so padding the plain side has to process shows up as lost throughput instead of being counted.
Each side runs in its own process. Final quality is compared on the same validation split.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

from bench.common import Profile, Result, cache_dir, emit, missing, run_worker

SPEEDUP_TARGET = 1.5
LOSS_TOLERANCE = 0.05
NUM_THREADS = 1  # the box is shared: 2 threads collapse under a neighbour's load (offline-models.md)


def dataset_dir(profile: Profile) -> Path:
    """A saved DatasetDict (train/validation ``messages``) cut from the figure 1 chain's JSONL."""
    from bench.prep_chain import measure, output_dir
    from bench.seeded import seeded_db

    db = seeded_db(profile.sizes[0], profile.history_days + 1)
    chain = output_dir(db)
    if not (chain / "train.jsonl").exists():
        measure(db)
    dest = cache_dir() / f"train_ds_{profile.name}_{profile.train_dialogs}"
    if dest.exists():
        return dest
    from datasets import Dataset, DatasetDict

    def first(path: Path, n: int) -> list[dict[str, Any]]:
        with path.open(encoding="utf-8") as f:
            return [{"messages": json.loads(line)["messages"]} for line in itertools.islice(f, n)]

    n_val = max(4, profile.train_dialogs // 8)
    DatasetDict({
        "train": Dataset.from_list(first(chain / "train.jsonl", profile.train_dialogs)),
        "validation": Dataset.from_list(first(chain / "validation.jsonl", n_val)),
    }).save_to_disk(str(dest))
    return dest


def _train(mode: str, dataset: Path, epochs: float, out: Path, batch_size: int | None = None,
           grad_accum: int | None = None) -> dict[str, Any]:
    """One training run in this (worker) process; returns throughput on real tokens and losses."""
    from transformers import AutoTokenizer

    from mrdabak_pipeline.core.training.sft import TrainParams, load_dialogs, train_sft

    params = TrainParams(
        throughput=mode,  # type: ignore[arg-type]
        epochs=epochs,
        num_threads=NUM_THREADS,
        save_steps=10**9,  # no checkpoint inside the measured loop (both sides alike)
        resume=False,
        logging_steps=1,
    )
    if batch_size:
        params.batch_size = batch_size
    if grad_accum:
        params.grad_accum = grad_accum
    t0 = time.perf_counter()
    result = train_sft(params, dataset, out / f"{mode}_bs{params.batch_size}x{params.grad_accum}", cache_dir() / "models", log=lambda _msg: None)
    wall = time.perf_counter() - t0
    tok = AutoTokenizer.from_pretrained(result["base_model_path"])
    dialogs = load_dialogs(dataset)["train"]["messages"]
    real = sum(min(params.max_length, len(tok.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in d], tokenize=True)["input_ids"])) for d in dialogs)
    m = result["metrics"]
    return {
        "mode": mode,
        "batch_size": params.batch_size,
        "grad_accum": params.grad_accum,
        "real_tokens_per_epoch": real,
        "train_wall_s": m["train_wall_s"],
        "wall_s": wall,
        "tokens_per_s": real * float(m["epochs"]) / m["train_wall_s"],
        "trainer_tokens_per_s": m["tokens_per_s"],
        "eval_loss": m["eval_loss"],
        "train_loss": m["train_loss"],
        "steps": m["global_step"],
        "epochs": m["epochs"],
        "model_path": result["model_path"],
        "base_model_path": result["base_model_path"],
    }


def run(profile: Profile) -> list[Result]:
    reason = missing("mrdabak_pipeline.core.training.sft")
    target = f"ratio >= {SPEEDUP_TARGET} and eval loss within {LOSS_TOLERANCE:.0%}"
    if reason:
        return [Result.skipped("3 training throughput", "tokens/s", target, reason)]
    dataset = dataset_dir(profile)
    out = cache_dir() / f"train_runs_{profile.name}"
    epochs = str(profile.train_epochs)
    def train(mode: str, *extra: str) -> dict[str, Any]:
        args = ["--mode", mode, "--dataset", str(dataset), "--epochs", epochs, "--out", str(out), *extra]
        return run_worker("training_throughput", args, timeout=3600)

    runs = {mode: train(mode) for mode in ("packed", "plain")}
    # Diagnostic (informational): packing with ONE packed row per micro-batch and gradient
    # accumulation matching plain's real tokens per optimizer step. Without a varlen attention
    # kernel (CPU), TRL's padding-free collator flattens the whole batch into one sequence and
    # attention over it is quadratic in batch_size * max_length; one row per micro-batch avoids that.
    from mrdabak_pipeline.core.training.sft import TrainParams

    defaults = TrainParams()
    per_dialog = runs["plain"]["real_tokens_per_epoch"] / profile.train_dialogs
    accum = max(1, round(defaults.batch_size * per_dialog / defaults.max_length))
    runs["packed_row"] = train("packed", "--batch-size", "1", "--grad-accum", str(accum))
    (out / "runs.json").write_text(json.dumps(runs, indent=2))
    packed, plain, row = runs["packed"], runs["plain"], runs["packed_row"]
    for r in (packed, plain, row):
        print(f"  {r['mode']} batch {r['batch_size']}x{r['grad_accum']}: {r['steps']} steps, {r['train_wall_s']:.1f} s, "
              f"{r['tokens_per_s']:.0f} real tok/s (trainer counts {r['trainer_tokens_per_s']}), "
              f"eval_loss {r['eval_loss']:.4f}", flush=True)
    loss_ratio = packed["eval_loss"] / plain["eval_loss"]
    loss_ok = abs(loss_ratio - 1) <= LOSS_TOLERANCE
    return [
        Result.measured(f"3 training tokens/s, tiny model, {NUM_THREADS} thread (packed vs plain TRL defaults)",
                        packed["tokens_per_s"], "tokens/s", plain["tokens_per_s"], target,
                        lambda v, r: r is not None and r >= SPEEDUP_TARGET and loss_ok),
        Result.measured("3 final eval loss (packed vs plain)", packed["eval_loss"], "nats/token", plain["eval_loss"],
                        f"|ratio - 1| <= {LOSS_TOLERANCE}", lambda v, r: r is not None and abs(r - 1) <= LOSS_TOLERANCE),
        Result.measured(f"3 diagnostic: packed, 1 row x {row['grad_accum']} accumulation vs plain (tokens/s)",
                        row["tokens_per_s"], "tokens/s", plain["tokens_per_s"], "info: suggested CPU setting"),
        Result.measured(f"3 diagnostic: packed, 1 row x {row['grad_accum']} accumulation vs plain (eval loss)",
                        row["eval_loss"], "nats/token", plain["eval_loss"], "info"),
    ]


def trained_model(profile: Profile) -> dict[str, Any] | None:
    """The packed run's adapter from this profile's figure 3, if it ran (figure 6 generates with it)."""
    path = cache_dir() / f"train_runs_{profile.name}" / "runs.json"
    return json.loads(path.read_text())["packed"] if path.exists() else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--mode", required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--epochs", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--grad-accum", type=int, default=None)
    args = parser.parse_args(argv)
    emit(_train(args.mode, args.dataset, args.epochs, args.out, args.batch_size, args.grad_accum))


if __name__ == "__main__":
    main()
