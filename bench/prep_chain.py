"""Figure 1: data preparation at scale, raw DB -> cleaned -> augmented (K=1) -> day shards -> JSONL.

The chain calls what the assets call for a backfill: `stages.extract` (one window per day),
`stages.clean` (rules, pseudonymization and the no_pii leak scan), `stages.augment` (variants and
the variant checks), `shards.build_shard` for each day (the dataset lines, checked and
token-counted: what ``dataset_shards`` stores, written here as one Parquet file per day like the
IO manager), then `build.assemble_openai_dataset` over the stored shards (``openai_chat_dataset``:
the files, their sha256 and their validation report). Everything runs in the run's process, as in
a Dagster run. Each stage is timed on its own (sessions/s, CPU seconds); the chain runs in a fresh
process so its memory (PSS of the process tree) is its own, and at two sizes so a per-session cost
that grows with size shows up as a ratio.

A backfill spreads over processes the Dagster way: as several runs (``BackfillPolicy.multi_run``)
that the run queue starts side by side. ``--runs N`` mirrors that: the days are cut into N
ranges, each prepared by its own process at the same time, and the dataset is then assembled from
all their shards. The figure compares N = the CPUs available (`runs_available`) with one run.
Seeding is reported beside it but is not part of the 60 s target (production data already exists).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Profile, Result, TreeMonitor, emit, missing, peak_rss_mib, run_worker
from bench.seeded import SeededDb, seeded_db

WALL_TARGET_S = 60.0
RSS_TARGET_MIB = 2048.0
#: Per-session cost at the big size over the small size; 1.0 is perfectly linear. The allowance
#: covers timing noise on a shared machine and the n*log(n) sorts that are fine at these sizes.
LINEARITY_TARGET = 1.25
STAGES = ("extract", "clean", "augment", "shard", "assemble")
MODULES = ("mrdabak_pipeline.core.prepare.stages", "mrdabak_pipeline.core.datasets.shards", "mrdabak_pipeline.core.datasets.build")


def runs_available() -> int:
    """Runs side by side for the multi-run row: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _warm_up() -> None:
    """Import the stages' modules and load the token encoding before the clock starts.

    These are one-off costs of a Python process (a Dagster run pays them once per run whatever its
    size); left inside, they would make the small size look slow per session and hide growth.
    """
    for name in MODULES:
        __import__(name)
    from mrdabak_pipeline.core.datasets.tokens import resolve_encoding
    from mrdabak_pipeline.core.datasets.validation import DEFAULT_MODEL

    resolve_encoding(DEFAULT_MODEL)


def _prepare(db_url: str, first_day: str, days: int, shard_dir: Path, stage: Any = None) -> None:
    """What the daily assets do for these days: extract, clean, augment, then one shard per day."""
    import pyarrow.parquet as pq

    from mrdabak_pipeline.core.datasets.shards import shards_of
    from mrdabak_pipeline.core.ingest.db import make_engine
    from mrdabak_pipeline.core.prepare import stages

    stage = stage or (lambda name, items: None)
    engine = make_engine(db_url)
    start = datetime.fromisoformat(first_day)
    windows = [stages.Window(start + timedelta(days=i), start + timedelta(days=i + 1), (start + timedelta(days=i)).date().isoformat())
               for i in range(days)]
    raw = stages.extract(engine, windows)
    engine.dispose()
    stage("extract", raw.num_rows)
    cleaned = stages.clean(raw).table
    del raw
    stage("clean", cleaned.num_rows)
    augmented = stages.augment(cleaned, k=1, seed=42).table
    del cleaned
    stage("augment", augmented.num_rows)
    rows = 0
    for shard in shards_of(augmented):
        pq.write_table(shard, shard_dir / f"{shard['partition_date'][0]}.parquet")
        rows += shard.num_rows
    stage("shard", rows)


def _run_chain(db_url: str, first_day: str, days: int, out_dir: Path, runs: int = 1) -> dict[str, Any]:
    """The chain, stage by stage (one run) or as `runs` processes side by side, then the assembly:
    per-stage seconds and CPU seconds, and the process tree's peak memory."""
    reason = missing(*MODULES)
    if reason:
        return {"stages": {}, "skipped": {"clean": reason}, "wall": 0.0, "cpu": 0.0, "peak_rss_mib": peak_rss_mib(), "peak_pss_mib": 0.0}
    import pyarrow.parquet as pq

    from mrdabak_pipeline.core.datasets.build import assemble_openai_dataset

    _warm_up()
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    for old in shard_dir.glob("*.parquet"):
        old.unlink()
    monitor = TreeMonitor()
    result: dict[str, Any] = {"stages": {}, "skipped": {}, "runs": runs}
    t_chain, cpu_chain = time.perf_counter(), monitor.cpu_seconds()
    last = {"t": t_chain, "cpu": cpu_chain}

    def stage(name: str, items: int) -> None:
        now, cpu = time.perf_counter(), monitor.cpu_seconds()
        result["stages"][name] = {"seconds": now - last["t"], "cpu_seconds": cpu - last["cpu"], "items": items,
                                  "pss_after_mib": monitor.peak_pss_mib}
        last.update(t=now, cpu=cpu)

    if runs <= 1:
        _prepare(db_url, first_day, days, shard_dir, stage)
    else:  # one process per range of days, all at once: the runs of a multi-run backfill
        start = datetime.fromisoformat(first_day)
        bounds = [days * i // runs for i in range(runs + 1)]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        procs = [subprocess.Popen(
            [sys.executable, "-m", "bench.prep_chain", "--part", "--db-url", db_url, "--first-day",
             (start + timedelta(days=a)).date().isoformat(), "--days", str(b - a), "--out-dir", str(shard_dir)],
            cwd=REPO_ROOT, env=env) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
        if any(p.wait() for p in procs):
            raise RuntimeError("a run of the backfill failed")
        stage("runs", days)
    value = assemble_openai_dataset((pq.read_table(p) for p in sorted(shard_dir.glob("*.parquet"))), out_dir)
    stage("assemble", value["train_examples"] + value["validation_examples"])

    result["wall"] = time.perf_counter() - t_chain
    result["cpu"] = monitor.cpu_seconds() - cpu_chain
    monitor.stop()
    result["peak_rss_mib"] = monitor.peak_rss_mib
    result["peak_pss_mib"] = monitor.peak_pss_mib
    return result


def measure(db: SeededDb, runs: int = 1) -> dict[str, Any]:
    """Run the chain over every day of `db` in a fresh process; its JSONL files stay in `output_dir(db)`."""
    first = db.day(db.days - 1).isoformat()
    args = ["--db-url", db.url, "--first-day", first, "--days", str(db.days), "--out-dir", str(output_dir(db)), "--runs", str(runs)]
    return run_worker("prep_chain", args, timeout=3600)


def output_dir(db: SeededDb) -> Path:
    """Where the chain over `db` leaves train.jsonl / validation.jsonl (figure 2 reuses them)."""
    return db.path.with_suffix("").with_name(db.path.stem + "_chain")


def run(profile: Profile) -> list[Result]:
    small_n, big_n = profile.sizes
    days = profile.history_days + 1
    small, big = seeded_db(small_n, days), seeded_db(big_n, days)
    print(f"  seeded {big.sessions} sessions / {big.messages} messages in {big.seed_seconds:.1f} s "
          f"(peak RSS {big.seed_peak_rss_mib:.0f} MiB); {small.sessions} in {small.seed_seconds:.1f} s", flush=True)
    r_small = measure(small)
    r_big = measure(big)
    runs = runs_available()
    r_many = measure(big, runs=runs) if runs > 1 else r_big  # a multi-run backfill of the same days, same run
    for name, why in {**r_small.get("skipped", {}), **r_big.get("skipped", {})}.items():
        print(f"  [partial] stage {name} not measured: {why}", flush=True)
    complete = not r_big.get("skipped") and all(s in r_big["stages"] for s in STAGES)
    tag = f"{big_n // 1000}k" if big_n >= 1000 else str(big_n)
    base_tag = f"{small_n // 1000}k" if small_n >= 1000 else str(small_n)
    out = [
        Result.measured(f"1 seeding ({tag} sessions, {big.messages} messages; not in the chain target)",
                        big.sessions / big.seed_seconds, "sessions/s", small.sessions / small.seed_seconds),
    ]
    for name in STAGES:
        if name in r_big["stages"] and name in r_small["stages"]:
            out.append(Result.measured(
                f"1 stage {name} ({tag} vs {base_tag})",
                big.sessions / r_big["stages"][name]["seconds"], "sessions/s",
                small.sessions / r_small["stages"][name]["seconds"],
            ))
        else:
            out.append(Result.skipped(f"1 stage {name}", "sessions/s", None, "its code has not landed yet"))
    wall_target = f"value <= {WALL_TARGET_S:g} s (whole chain)"
    rss_target = f"value <= {RSS_TARGET_MIB:g} MiB"
    out.append(Result.measured(f"1 chain wall time ({tag}; baseline {base_tag})", r_big["wall"], "s", r_small["wall"],
                               wall_target, (lambda v, r: v <= WALL_TARGET_S) if complete else None))
    # Memory of the process tree (the run, and in the multi-run row its runs): PSS splits shared
    # pages between the processes, so the sum is the real footprint; the RSS sum counts them once
    # per process and is shown beside it as an upper bound.
    out.append(Result.measured(f"1 chain peak memory, PSS of the process tree ({tag}; baseline {base_tag})",
                               r_big["peak_pss_mib"], "MiB", r_small["peak_pss_mib"], rss_target,
                               (lambda v, r: v <= RSS_TARGET_MIB) if complete else None))
    out.append(Result.measured(f"1 chain peak RSS summed over the process tree ({tag}; baseline {base_tag})",
                               r_big["peak_rss_mib"], "MiB", r_small["peak_rss_mib"]))
    out.append(Result.measured(f"1 chain CPU time ({tag}; baseline {base_tag})", r_big["cpu"], "s", r_small["cpu"]))
    out.append(Result.measured(f"1 chain wall time, {runs} runs side by side vs one run ({tag}, same run)",
                               r_many["wall"], "s", r_big["wall"]))
    out.append(Result.measured(f"1 chain peak memory (PSS), {runs} runs side by side vs one run ({tag})",
                               r_many["peak_pss_mib"], "MiB", r_big["peak_pss_mib"]))
    # Linearity on CPU time: on a shared box wall time mostly measures the neighbours.
    per_big = r_big["cpu"] / big.sessions * 1e6
    per_small = r_small["cpu"] / small.sessions * 1e6
    out.append(Result.measured(f"1 chain CPU cost per session ({tag} vs {base_tag}: linear growth)", per_big, "us/session",
                               per_small, f"ratio <= {LINEARITY_TARGET}",
                               (lambda v, r: r is not None and r <= LINEARITY_TARGET) if complete else None))
    for label, res in (("big", r_big), ("small", r_small), (f"big, {runs} runs", r_many)):
        print(f"  chain {label} ({res.get('runs', 1)} runs): wall {res['wall']:.1f} s, CPU {res['cpu']:.1f} s; " + ", ".join(
            f"{k} {v['seconds']:.2f}s/{v['cpu_seconds']:.2f}s CPU (peak PSS {v['pss_after_mib']:.0f} MiB)"
                                                for k, v in res["stages"].items()), flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--part", action="store_true", help="one run of a multi-run backfill: its days' shards into --out-dir")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--first-day", required=True)
    parser.add_argument("--days", type=int, required=True)
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    if args.part:
        _warm_up()
        _prepare(args.db_url, args.first_day, args.days, args.out_dir)
        return
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        emit(_run_chain(args.db_url, args.first_day, args.days, args.out_dir, args.runs))
        return
    with tempfile.TemporaryDirectory(prefix="bench-prep-") as tmp:
        emit(_run_chain(args.db_url, args.first_day, args.days, Path(tmp), args.runs))


if __name__ == "__main__":
    main()
