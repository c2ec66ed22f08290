"""``python -m bench [--quick] [--only 1,5] [--out PATH]``: run the figures, print, write results.json.

A figure whose code has not landed, or that fails, becomes rows with ``value: null`` and the
reason printed, so one broken figure never hides the others' numbers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import time
import traceback
from pathlib import Path

from bench.common import PROFILES, RESULTS_PATH, Result, format_table

#: figure number -> (module, what it measures); run in this order.
FIGURES: dict[str, tuple[str, str]] = {
    "1": ("prep_chain", "data preparation at scale"),
    "2": ("validation_speed", "dataset validation and token counting"),
    "3": ("training_throughput", "training throughput"),
    "4": ("incremental_refresh", "incremental refresh"),
    "5": ("sensor_tick", "retrain sensor tick"),
    "6": ("generation_speed", "batched generation"),
    "7": ("prompt_cost", "short vs full prompt: tokens and latency per request"),
}


def machine() -> str:
    """One line describing where the numbers come from (they mean little without it)."""
    import psutil

    mem = psutil.virtual_memory().total / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {mem:.0f} GiB RAM, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}; load avg {load}")


def write_results(results: list[Result], path: Path, keep: list[dict] | None = None) -> None:
    """Atomic: a crash mid-write never leaves a truncated results.json behind.

    `keep`: rows of figures not re-run this time (``--only``), kept so a partial run does not
    erase the other figures' last measurements.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    rows = sorted([*(keep or []), *(r.to_dict() for r in results)], key=lambda r: int(r["figure"].split()[0]))
    tmp.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="profile", help="smaller sizes (development)")
    size.add_argument("--smoke", action="store_const", const="smoke", dest="profile", help="tiny sizes (the smoke test)")
    parser.add_argument("--only", default="", help="comma-separated figure numbers, e.g. 1,5")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help="where to write the results JSON")
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile or "full"]
    wanted = [f.strip() for f in args.only.split(",") if f.strip()] or list(FIGURES)
    unknown = set(wanted) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figure(s) {sorted(unknown)}; known: {', '.join(FIGURES)}")

    print(f"bench profile={profile.name} on {machine()}", flush=True)
    keep: list[dict] = []
    if args.only and args.out.exists():
        keep = [r for r in json.loads(args.out.read_text(encoding="utf-8")) if r["figure"].split()[0] not in wanted]
    results: list[Result] = []
    for number in wanted:
        module, title = FIGURES[number]
        print(f"\n== figure {number}: {title}", flush=True)
        t0 = time.perf_counter()
        try:
            rows = importlib.import_module(f"bench.{module}").run(profile)
        except ModuleNotFoundError as exc:
            if exc.name != f"bench.{module}" and not (exc.name or "").startswith("mrdabak_pipeline"):
                raise
            rows = [Result.skipped(f"{number} {title}", "", None, f"not measurable yet: {exc}")]
        except Exception as exc:  # noqa: BLE001 - one failing figure must not hide the others
            traceback.print_exc()
            rows = [Result.skipped(f"{number} {title}", "", None, f"failed: {type(exc).__name__}: {exc}")]
        for r in rows:
            print(f"  {r.figure}: {r.value} {r.unit} vs baseline {r.baseline} -> ratio {r.ratio} "
                  f"[{r.target or 'info'}] met={r.met}", flush=True)
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
        results.extend(rows)
        write_results(results, args.out, keep)  # keep what was measured even if a later figure dies

    print("\n" + format_table(results))
    write_results(results, args.out, keep)
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
