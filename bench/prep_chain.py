"""Figure 1: data preparation at scale, raw DB -> cleaned -> augmented (K=1) -> JSONL + validation.

The chain calls what a single-run backfill of the assets calls: `core.stages.extract` (one
window per day), `stages.clean` (rules, pseudonymization and the no_pii leak scan),
`stages.augment` (variants and the variant checks), `dataset_build.write_chat_jsonl` given the
stored table, and `validation.validate_jsonl` on the files written; each spreads its chunks over
the worker processes of `core.parallel` (``MRDABAK_WORKERS``, default: every CPU). Each stage is
timed on its own (sessions/s, CPU seconds of the whole process tree); the chain runs in a fresh
process so its memory (PSS of the process tree, its worker processes included) is its own, and it
runs at two sizes so a per-session cost that grows with size shows up as a ratio.
Seeding is reported beside it but is not part of the 60 s target (production data already exists).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import Profile, Result, TreeMonitor, emit, missing, peak_rss_mib, run_worker
from bench.seeded import SeededDb, seeded_db

WALL_TARGET_S = 60.0
RSS_TARGET_MIB = 2048.0
#: Per-session cost at the big size over the small size; 1.0 is perfectly linear. The allowance
#: covers timing noise on a shared machine and the n*log(n) sorts that are fine at these sizes.
LINEARITY_TARGET = 1.25
STAGES = ("extract", "clean", "augment", "format", "validate")


def _warm_up() -> None:
    """Import the stages' modules and load the token encoding before the clock starts.

    These are one-off costs of a Python process (a Dagster run pays them once per run whatever its
    size); left inside, they would make the small size look slow per session and hide growth. The
    worker processes are NOT started here: their start (and their own imports and encoding load)
    is inside the clock, as it is inside a run.
    """
    for name in ("mrdabak_pipeline.core.prepare.stages", "mrdabak_pipeline.core.datasets.build", "mrdabak_pipeline.core.datasets.validation"):
        if missing(name) is None:
            __import__(name)
    if missing("mrdabak_pipeline.core.datasets.validation") is None:
        from mrdabak_pipeline.core.datasets.tokens import resolve_encoding
        from mrdabak_pipeline.core.datasets.validation import DEFAULT_MODEL

        resolve_encoding(DEFAULT_MODEL)


def _run_chain(db_url: str, first_day: str, days: int, out_dir: Path) -> dict[str, Any]:
    """The chain itself, stage by stage, as the assets call it: per-stage seconds and CPU seconds
    (this process and its workers), items, and the process tree's peak RSS."""
    reason = missing("mrdabak_pipeline.core.prepare.stages", "mrdabak_pipeline.core.datasets.build", "mrdabak_pipeline.core.datasets.validation")
    if reason:
        return {"stages": {}, "skipped": {"clean": reason}, "wall": 0.0, "cpu": 0.0, "peak_rss_mib": peak_rss_mib()}
    from mrdabak_pipeline.core.datasets.build import write_chat_jsonl
    from mrdabak_pipeline.core.datasets.validation import validate_jsonl
    from mrdabak_pipeline.core.ingest.db import make_engine
    from mrdabak_pipeline.core.prepare import stages
    from mrdabak_pipeline.core.runtime import parallel

    _warm_up()
    monitor = TreeMonitor()
    result: dict[str, Any] = {"stages": {}, "skipped": {}, "workers": parallel.worker_count()}
    t_chain, cpu_chain = time.perf_counter(), monitor.cpu_seconds()
    last = {"t": t_chain, "cpu": cpu_chain, "own": time.process_time()}

    def stage(name: str, items: int) -> None:
        now, cpu, own = time.perf_counter(), monitor.cpu_seconds(), time.process_time()
        result["stages"][name] = {"seconds": now - last["t"], "cpu_seconds": cpu - last["cpu"], "items": items,
                                  "main_process_cpu_seconds": own - last["own"], "rss_after_mib": monitor.peak_rss_mib,
                                  "pss_after_mib": monitor.peak_pss_mib}
        last.update(t=now, cpu=cpu, own=own)

    # extract: one window query per Seoul day, as raw_conversation_logs does for a range
    engine = make_engine(db_url)
    start = datetime.fromisoformat(first_day)
    windows = [(start + timedelta(days=i), start + timedelta(days=i + 1), (start + timedelta(days=i)).date().isoformat())
               for i in range(days)]
    raw = stages.extract(engine, windows)
    engine.dispose()
    stage("extract", raw.num_rows)

    # clean: rules + PII pseudonymization + the leak scan, as clean_sessions (stored as a table)
    cleaned = stages.clean(raw).table
    del raw
    stage("clean", cleaned.num_rows)

    augmented = stages.augment(cleaned, k=1, seed=42).table
    del cleaned
    stage("augment", augmented.num_rows)

    # the same streaming writer the openai_chat_dataset asset uses, given the stored table
    ds, _, _ = write_chat_jsonl(augmented, out_dir)
    del augmented
    stage("format", ds.n_train + ds.n_validation)

    reports = [validate_jsonl(out_dir / "train.jsonl"), validate_jsonl(out_dir / "validation.jsonl")]
    stage("validate", sum(r.n_examples for r in reports))

    result["wall"] = time.perf_counter() - t_chain
    result["cpu"] = monitor.cpu_seconds() - cpu_chain
    parallel.shutdown()  # the workers count in the figures until here
    monitor.stop()
    result["peak_rss_mib"] = monitor.peak_rss_mib
    result["peak_pss_mib"] = monitor.peak_pss_mib
    return result


def measure(db: SeededDb, workers: int | None = None) -> dict[str, Any]:
    """Run the chain over every day of `db` in a fresh process; its JSONL files stay in `output_dir(db)`.

    `workers` sets ``MRDABAK_WORKERS`` for that process (None: the default, every CPU).
    """
    first = db.day(db.days - 1).isoformat()
    args = ["--db-url", db.url, "--first-day", first, "--days", str(db.days), "--out-dir", str(output_dir(db))]
    return run_worker("prep_chain", args, timeout=3600, env={"MRDABAK_WORKERS": str(workers)} if workers else None)


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
    r_one = measure(big, workers=1)  # the same chain in one process, same run: what the cores bring
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
    # Memory of the process tree (the chain and its worker processes): PSS splits the pages a
    # worker shares with the forkserver it was forked from, so the sum is the real footprint; the
    # RSS sum counts those pages once per process and is shown beside it as an upper bound.
    out.append(Result.measured(f"1 chain peak memory, PSS of the process tree ({tag}; baseline {base_tag})",
                               r_big["peak_pss_mib"], "MiB", r_small["peak_pss_mib"], rss_target,
                               (lambda v, r: v <= RSS_TARGET_MIB) if complete else None))
    out.append(Result.measured(f"1 chain peak RSS summed over the process tree ({tag}; baseline {base_tag})",
                               r_big["peak_rss_mib"], "MiB", r_small["peak_rss_mib"]))
    out.append(Result.measured(f"1 chain CPU time ({tag}; baseline {base_tag})", r_big["cpu"], "s", r_small["cpu"]))
    out.append(Result.measured(f"1 chain wall time, {r_big.get('workers', 1)} worker processes vs one process ({tag}, same run)",
                               r_big["wall"], "s", r_one["wall"]))
    out.append(Result.measured(f"1 chain peak memory (PSS), {r_big.get('workers', 1)} worker processes vs one process ({tag})",
                               r_big["peak_pss_mib"], "MiB", r_one["peak_pss_mib"]))
    # Linearity on CPU time: on a shared box wall time mostly measures the neighbours.
    per_big = r_big["cpu"] / big.sessions * 1e6
    per_small = r_small["cpu"] / small.sessions * 1e6
    out.append(Result.measured(f"1 chain CPU cost per session ({tag} vs {base_tag}: linear growth)", per_big, "us/session",
                               per_small, f"ratio <= {LINEARITY_TARGET}",
                               (lambda v, r: r is not None and r <= LINEARITY_TARGET) if complete else None))
    for label, res in (("big", r_big), ("small", r_small), ("big, one process", r_one)):
        print(f"  chain {label} ({res.get('workers', 1)} worker processes): wall {res['wall']:.1f} s, CPU {res['cpu']:.1f} s; " + ", ".join(
            f"{k} {v['seconds']:.2f}s/{v['cpu_seconds']:.2f}s CPU (peak PSS {v['pss_after_mib']:.0f} MiB)"
                                                for k, v in res["stages"].items()), flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--first-day", required=True)
    parser.add_argument("--days", type=int, required=True)
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        emit(_run_chain(args.db_url, args.first_day, args.days, args.out_dir))
        return
    with tempfile.TemporaryDirectory(prefix="bench-prep-") as tmp:
        emit(_run_chain(args.db_url, args.first_day, args.days, Path(tmp)))


if __name__ == "__main__":
    main()
