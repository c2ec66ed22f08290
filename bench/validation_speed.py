"""Figure 2: dataset validation + token counting, the project's fast path vs the cookbook loop.

Both sides are the real functions of `core/datasets/validation.py` on the same file, the training JSONL the
figure 1 chain wrote (cut to the profile's example count): `validate_jsonl` checks blocks of lines
as Arrow columns and encodes every distinct string once; `validate_jsonl_naive` is OpenAI's
published per-message loop (one ``encode`` per message). The encoding is resolved once beforehand and given
to both, so neither pays the vocabulary load. Counts must be identical, example by example.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from bench.common import Profile, Result, cache_dir, missing
from bench.prep_chain import measure, output_dir
from bench.seeded import seeded_db

SPEEDUP_TARGET = 3.0


def dataset_file(profile: Profile) -> Path:
    """A JSONL file of exactly `validation_examples` examples (fewer if the chain made fewer)."""
    db = seeded_db(profile.sizes[1], profile.history_days + 1)
    source = output_dir(db) / "train.jsonl"
    if not source.exists():
        measure(db)
    dest = cache_dir() / f"validation_{profile.validation_examples}_{db.path.stem}.jsonl"
    if not dest.exists() or dest.stat().st_mtime < source.stat().st_mtime:
        with source.open("rb") as src, dest.open("wb") as out:
            out.writelines(itertools.islice(src, profile.validation_examples))
    return dest


def run(profile: Profile) -> list[Result]:
    reason = missing("mrdabak_pipeline.core.datasets.validation")
    if reason:
        return [Result.skipped("2 validation + token counting", "examples/s", f"ratio >= {SPEEDUP_TARGET}", reason)]
    from mrdabak_pipeline.core.datasets.tokens import resolve_encoding
    from mrdabak_pipeline.core.datasets.validation import DEFAULT_MODEL, validate_jsonl, validate_jsonl_naive

    path = dataset_file(profile)
    encoding = resolve_encoding(DEFAULT_MODEL)

    cpu: dict[str, float] = {}

    def timed(fn, key):  # noqa: ANN001, ANN202 - tiny local helper
        t0, c0 = time.perf_counter(), time.process_time()
        report = fn(path, DEFAULT_MODEL, encoding=encoding)
        cpu[key] = cpu.get(key, 0.0) + time.process_time() - c0
        return time.perf_counter() - t0, report

    t_fast1, fast = timed(validate_jsonl, "fast")
    t_naive, naive = timed(validate_jsonl_naive, "naive")
    t_fast2, _ = timed(validate_jsonl, "fast")
    t_fast = (t_fast1 + t_fast2) / 2  # fast runs on both sides of the naive one: fair to drift in load
    cpu["fast"] /= 2
    n = fast.n_examples
    identical = (fast.n_tokens == naive.n_tokens and fast.n_assistant_tokens == naive.n_assistant_tokens
                 and fast.errors == naive.errors and fast.warnings == naive.warnings)
    print(f"  {n} examples, {fast.total_tokens} tokens; fast {t_fast:.2f} s, naive {t_naive:.2f} s; "
          f"identical counts: {identical}", flush=True)
    return [
        Result.measured(
            f"2 validation + token counting ({n} examples; baseline: cookbook per-message loop)",
            n / t_fast, "examples/s", n / t_naive, f"ratio >= {SPEEDUP_TARGET} and identical counts",
            lambda v, r: identical and r is not None and r >= SPEEDUP_TARGET,
        ),
        Result.measured("2 validation + token counting, CPU seconds (fast vs per-message loop)", cpu["fast"], "s",
                        cpu["naive"], "info: fast uses threads, so CPU time shows the work saved"),
        Result.measured("2 token counts identical to the per-message loop", float(identical), "bool", None,
                        "value == 1", lambda v, r: v == 1.0),
    ]
