"""The benchmark harness runs end to end on tiny sizes and writes results.json in its documented shape.

No timing is asserted (numbers on a shared machine are reported, not tested); what is tested is
that `python -m bench` keeps working as the code it measures changes, and that a figure whose
code is missing or broken becomes a skipped row instead of killing the run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.__main__ import main
from bench.common import CACHE_ENV, RESULT_KEYS, Result, format_table


@pytest.fixture
def bench_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "bench_cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    return cache


def _check_shape(rows: list[dict]) -> None:
    assert rows, "no results written"
    for row in rows:
        assert tuple(row) == RESULT_KEYS
        assert isinstance(row["figure"], str) and row["figure"]
        assert isinstance(row["unit"], str)
        assert row["met"] in (True, False, None)
        if row["value"] is not None and row["baseline"]:
            assert math.isclose(row["ratio"], row["value"] / row["baseline"], rel_tol=1e-2)


def test_smoke_figures_1_2_5_write_results_json(bench_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    results = main(["--smoke", "--only", "1,2,5", "--out", str(out)])
    rows = json.loads(out.read_text(encoding="utf-8"))
    _check_shape(rows)
    assert [r.to_dict() for r in results] == rows
    figures = [r["figure"] for r in rows]
    assert any(f.startswith("1 stage extract") for f in figures)
    assert any(f.startswith("2 validation") for f in figures)
    assert any(f.startswith("5 ") for f in figures)
    # every figure here has landed: nothing may be skipped, and the pass/fail rows are decided
    assert all(r["value"] is not None for r in rows), [r["figure"] for r in rows if r["value"] is None]
    assert next(r for r in rows if r["figure"].startswith("2 token counts identical"))["value"] == 1.0
    assert (bench_cache / "raw_200s_4d_2025-06-30_seed7.db").exists()  # the cache went where it was told


@pytest.mark.e2e
def test_smoke_figure_4_refresh_through_dagster(bench_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    main(["--smoke", "--only", "4", "--out", str(out)])
    rows = json.loads(out.read_text(encoding="utf-8"))
    _check_shape(rows)
    assert len(rows) == 2  # full history at the small size, raw-DB history at the big size
    for row in rows:
        assert row["figure"].startswith("4 nightly refresh") and row["value"] > 0 and row["baseline"] > 0


def test_result_rows_and_table() -> None:
    r = Result.measured("x", 6.0, "s", 2.0, "ratio <= 4", lambda v, ratio: ratio <= 4)
    assert (r.ratio, r.met) == (3.0, True)
    assert Result.measured("y", None, "s", 2.0, "t", lambda v, ratio: True).met is None
    skipped = Result.skipped("z", "s", "value <= 1", "not there")
    assert skipped.value is None and skipped.met is None
    table = format_table([r, skipped])
    assert "| x | 6 s | 2 s | 3.00x | ratio <= 4 | yes |" in table and "skipped" in table


def test_unknown_figure_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--smoke", "--only", "9", "--out", str(tmp_path / "r.json")])
