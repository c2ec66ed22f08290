"""Shared pieces of the benchmark harness: the result record, profiles, timing and RSS helpers.

Every figure is measured against a baseline *in the same run* on the same machine, because on a
shared 2-core box absolute numbers swing with the neighbours' load while a same-run ratio mostly
does not. Figures that need heavy isolation (peak RSS) run in a fresh subprocess: ``ru_maxrss`` is
a per-process high-water mark, so it is only meaningful for a process that did nothing else.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CACHE_ENV = "MRDABAK_BENCH_CACHE"


def cache_dir() -> Path:
    """Seeded DBs, chain outputs and models, reused between runs (100k sessions take a minute to
    seed). ``bench/.cache`` (git-ignored) unless `MRDABAK_BENCH_CACHE` points elsewhere (tests)."""
    return Path(os.environ.get(CACHE_ENV) or BENCH_DIR / ".cache").absolute()

RESULTS_PATH = BENCH_DIR / "results.json"
RESULT_KEYS = ("figure", "value", "unit", "baseline", "ratio", "target", "met")


@dataclass
class Result:
    """One line of ``results.json``.

    ``ratio`` is always ``value / baseline``; ``target`` says in words which side is good
    (e.g. ``"ratio >= 3"`` or ``"value <= 60"``), and ``met`` is None where a row is informational
    or could not be measured (``value`` None then means "skipped", the reason is printed).
    """

    figure: str
    value: float | None
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None

    @classmethod
    def measured(
        cls, figure: str, value: float | None, unit: str, baseline: float | None = None,
        target: str | None = None, check: Callable[[float, float | None], bool] | None = None,
    ) -> Result:
        """Fill ``ratio`` and ``met`` from value/baseline; `check(value, ratio)` decides ``met``."""
        ratio = value / baseline if value is not None and baseline else None
        met = bool(check(value, ratio)) if check is not None and value is not None else None
        return cls(figure, _round(value), unit, _round(baseline), _round(ratio), target, met)

    @classmethod
    def skipped(cls, figure: str, unit: str, target: str | None, reason: str) -> Result:
        print(f"  [skip] {figure}: {reason}", flush=True)
        return cls(figure, None, unit, None, None, target, None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _round(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.4g}")


@dataclass(frozen=True)
class Profile:
    """How big each figure runs. `full` is the issue's sizes; `quick` for development; `smoke` for
    the test that only checks the harness end to end."""

    name: str
    #: figures 1, 4, 5: (baseline size, measured size) in sessions, both spread over
    #: ``history_days + 1`` days; figure 4 refreshes the last day on top of the others.
    sizes: tuple[int, int]
    history_days: int
    validation_examples: int  # figure 2
    train_dialogs: int  # figure 3
    train_epochs: float
    gen_prompts: int  # figure 6
    gen_max_new_tokens: int
    repeats: int


PROFILES = {
    "full": Profile("full", (10_000, 100_000), 90, 100_000, 128, 2.0, 32, 48, 3),
    "quick": Profile("quick", (1_000, 10_000), 90, 10_000, 96, 1.0, 12, 24, 3),
    "smoke": Profile("smoke", (60, 200), 3, 200, 24, 1.0, 3, 8, 1),
}


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall seconds of `repeats` calls: robust to one call hit by a neighbour's burst."""
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class TreeMonitor:
    """Peak memory and CPU seconds of this process *and its descendants* (a stage's workers).

    A background thread samples the process tree every `interval` seconds. Two memory figures:
    ``peak_pss_mib``, the largest sum of proportional set sizes (each page shared between
    processes, like the modules a forked worker inherits, is split between them: the tree's real
    footprint), and ``peak_rss_mib``, the largest sum of resident set sizes (shared pages counted
    once per process: an upper bound). `cpu_seconds()` is user+system time of every process seen.
    """

    def __init__(self, interval: float = 0.2) -> None:
        import threading

        import psutil

        self._me = psutil.Process()
        self._interval = interval
        self._cpu_of: dict[int, float] = {}
        self.peak_rss_mib = 0.0
        self.peak_pss_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self, memory: bool = True) -> None:
        import psutil

        rss = pss = 0
        for proc in [self._me, *self._me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    self._cpu_of[proc.pid] = t.user + t.system
                    if memory:
                        full = proc.memory_full_info()  # smaps_rollup: PSS needs it
                        rss += full.rss
                        pss += full.pss
            except psutil.Error:  # ended between listing and reading
                continue
        if memory:
            self.peak_rss_mib = max(self.peak_rss_mib, rss / 2**20)
            self.peak_pss_mib = max(self.peak_pss_mib, pss / 2**20)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def cpu_seconds(self) -> float:
        self._sample(memory=False)
        return sum(self._cpu_of.values())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def run_worker(module: str, args: list[str], timeout: float = 1800, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m bench.<module> --worker ARGS`` in a fresh process; it prints one JSON line last.

    A fresh process per measurement gives an honest peak RSS and keeps one figure's imports
    (torch, dagster) from inflating another's numbers.
    """
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--worker", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench.{module} worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"bench.{module} worker printed no JSON:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def emit(payload: dict[str, Any]) -> None:
    """The worker side of `run_worker`: the last stdout line is the JSON answer."""
    print(json.dumps(payload), flush=True)


def format_table(results: list[Result]) -> str:
    """A Markdown table of the results (printed by ``python -m bench`` and pasted in the README)."""
    lines = ["| figure | value | baseline | ratio | target | met |", "|---|---:|---:|---:|---|:---:|"]
    for r in results:
        met = {True: "yes", False: "**no**", None: "-"}[r.met]
        val = "skipped" if r.value is None else f"{r.value:g} {r.unit}"
        base = "" if r.baseline is None else f"{r.baseline:g} {r.unit}"
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
        lines.append(f"| {r.figure} | {val} | {base} | {ratio} | {r.target or ''} | {met} |")
    return "\n".join(lines)


def missing(*modules: str) -> str | None:
    """The first of `modules` that cannot be imported yet (other engineers are still writing them)."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return f"{name} not importable yet ({exc})"
    return None
