"""The chunked, multi-process stages write exactly what one process writes, on real seeded data.

Chunk thresholds are lowered so a few hundred sessions already split into several chunks and go
through real worker processes (the forkserver pool of `core.parallel`).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core import records
from mrdabak_pipeline.core.datasets import chat_lines, validation
from mrdabak_pipeline.core.datasets.build import write_chat_jsonl
from mrdabak_pipeline.core.datasets.validation import validate_jsonl
from mrdabak_pipeline.core.ingest.db import make_engine
from mrdabak_pipeline.core.ingest.seed import seed_database
from mrdabak_pipeline.core.prepare import stages
from mrdabak_pipeline.core.runtime import parallel

END = date(2025, 6, 30)
DAYS = 10


@pytest.fixture(scope="module")
def seeded_engine(tmp_path_factory: pytest.TempPathFactory):
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('par') / 'raw.db'}")
    seed_database(engine, sessions=400, days=DAYS, seed=3, end_date=END, damage_rate=0.15)
    return engine


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(parallel.WORKERS_ENV, "2")
    monkeypatch.setattr(stages, "MIN_CHUNK_ROWS", 200)
    monkeypatch.setattr(stages, "MIN_CHUNK_SESSIONS", 40)
    monkeypatch.setattr(stages, "MIN_CHUNK_DAYS", 2)
    monkeypatch.setattr(chat_lines, "MIN_CHUNK_SESSIONS", 10)
    monkeypatch.setattr(validation, "MIN_CHUNK_BYTES", 20_000)


def _windows() -> list[stages.Window]:
    first = datetime.combine(END - timedelta(days=DAYS - 1), datetime.min.time())
    return [(first + timedelta(days=i), first + timedelta(days=i + 1), (first + timedelta(days=i)).date().isoformat()) for i in range(DAYS)]


def _worker_pid(_: object) -> int:
    return os.getpid()


def _fail(x: int) -> int:
    if x == 3:
        raise ValueError("chunk 3 is bad")
    return x


def _env(name: str) -> str | None:
    return os.environ.get(name)


@pytest.mark.integration
def test_work_really_runs_in_other_processes_and_in_order() -> None:
    pids = list(parallel.imap(_worker_pid, range(6), workers=2))
    assert os.getpid() not in pids
    assert list(parallel.imap(abs, [-1, -2, -3, -4, -5], workers=2)) == [1, 2, 3, 4, 5]


@pytest.mark.integration
def test_a_failing_chunk_raises_its_own_error_in_the_caller() -> None:
    with pytest.raises(ValueError, match="chunk 3 is bad"):
        list(parallel.imap(_fail, range(6), workers=2))
    assert list(parallel.imap(_fail, [1, 2], workers=2)) == [1, 2]  # the pool still works


@pytest.mark.integration
def test_the_callers_environment_reaches_a_running_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    list(parallel.imap(_worker_pid, range(2), workers=2))  # the pool exists before the change
    monkeypatch.setenv("MRDABAK_PARALLEL_PROBE", "after-start")
    assert set(parallel.imap(_env, ["MRDABAK_PARALLEL_PROBE"] * 4, workers=2)) == {"after-start"}


def _slow_square(x: int) -> int:
    time.sleep(0.05)
    return x * x


@pytest.mark.integration
def test_every_stage_gets_fresh_workers_and_threads_sharing_the_pool_are_not_disturbed() -> None:
    first = set(parallel.imap(_worker_pid, range(6), workers=2))
    second = set(parallel.imap(_worker_pid, range(6), workers=2))
    assert first and second and not first & second  # renewed once the first call was done
    results: dict[str, list[int]] = {}

    def run(name: str, n: int) -> None:
        results[name] = list(parallel.imap(_slow_square, range(n), workers=2))

    threads = [threading.Thread(target=run, args=("long", 12)), threading.Thread(target=run, args=("short", 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {"long": [x * x for x in range(12)], "short": [0, 1, 4]}


def test_one_worker_or_a_small_input_stays_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(parallel.imap(_worker_pid, range(4), workers=1)) == {os.getpid()}
    assert parallel.chunk_count(10_000, 20_000, workers=2) == 1
    assert parallel.chunk_count(200_000, 20_000, workers=2) == 2 * parallel.CHUNKS_PER_WORKER
    monkeypatch.setenv(parallel.WORKERS_ENV, "1")
    assert parallel.chunk_count(10**9, 1) == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", None]), min_size=1, max_size=60), st.integers(1, 9))
def test_session_slices_never_split_a_session_and_keep_the_order(ids: list[str | None], parts: int) -> None:
    table = pa.table({"session_id": pa.array(ids, pa.string()), "row": list(range(len(ids)))})
    slices = parallel.session_slices(table, parts)
    assert 1 <= len(slices) <= parts
    assert pa.concat_tables(slices).equals(table)
    seen_in: dict[str | None, int] = {}
    for i, s in enumerate(slices):
        for sid in set(s.column("session_id").to_pylist()):
            assert seen_in.setdefault(sid, i) == i, f"session {sid!r} split across slices"


@pytest.mark.integration
def test_extract_clean_augment_match_a_single_process_run(seeded_engine, small_chunks) -> None:
    serial_raw = stages.extract(seeded_engine, _windows(), workers=1)
    raw = stages.extract(seeded_engine, _windows())
    assert raw.equals(serial_raw)

    serial = stages.clean(raw, workers=1)
    chunked = stages.clean(raw)
    assert len(parallel.session_slices(raw, parallel.chunk_count(raw.num_rows, stages.MIN_CHUNK_ROWS))) > 2
    assert chunked.table.equals(serial.table)
    assert chunked.summary.row_balance() == serial.summary.row_balance()
    assert chunked.summary.row_balance()["unaccounted"] == 0
    assert Counter(r.session_id for r in chunked.summary.rejections) == Counter(r.session_id for r in serial.summary.rejections)
    assert chunked.summary.rejection_counts == serial.summary.rejection_counts and serial.summary.rejections
    assert chunked.summary.raw_session_ids == serial.summary.raw_session_ids
    assert (chunked.pii.replaced, chunked.pii.sessions_touched) == (serial.pii.replaced, serial.pii.sessions_touched)
    assert chunked.leaks == serial.leaks == Counter()
    assert chunked.tags == serial.tags

    one = stages.augment(serial.table, k=2, seed=5, workers=1)
    many = stages.augment(serial.table, k=2, seed=5)
    assert many.table.equals(one.table)
    assert many.figures == one.figures
    assert many.figures["source_sessions"] == serial.summary.kept_sessions
    assert many.worse_variants == one.worse_variants == []


@pytest.mark.integration
def test_dataset_files_are_the_same_bytes_from_worker_processes(seeded_engine, small_chunks, tmp_path: Path) -> None:
    cleaned = stages.clean(stages.extract(seeded_engine, _windows(), workers=1), workers=1).table
    table = stages.augment(cleaned, k=1, seed=1, workers=1).table
    serial_ds, serial_train, serial_valid = write_chat_jsonl(records.sessions_from_table(table), tmp_path / "serial")
    ds, train_sha, valid_sha = write_chat_jsonl(table, tmp_path / "chunked")
    assert (train_sha, valid_sha) == (serial_train, serial_valid)
    assert ds.counts() == serial_ds.counts() and ds.skipped == serial_ds.skipped
    assert ds.high_water_mark == serial_ds.high_water_mark
    assert ds.n_train > 200


@pytest.mark.integration
def test_validation_of_line_ranges_merges_into_the_whole_file_report(tmp_path: Path, small_chunks) -> None:
    good = '{"messages":[{"role":"system","content":"s"},{"role":"user","content":"발렌타인 디너요"},{"role":"assistant","content":"네"}]}'
    lines = [good] * 400
    lines[7] = "{not json"
    lines[250] = '{"messages":[{"role":"user","content":"no assistant"}]}'
    lines[399] = '{"messages":[{"role":"bot","content":"x"},{"role":"assistant","content":"y"}]}'
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert len(validation.line_ranges(path, 4)) == 4
    whole = validate_jsonl(path, workers=1)
    chunked = validate_jsonl(path)
    assert chunked.summary() == whole.summary()
    assert whole.error_lines == {"invalid_json": [8], "example_missing_assistant_message": [251], "unrecognized_role": [400]}
    assert chunked.n_tokens == whole.n_tokens


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_gathered_rows_in_their_order_are_table_take_on_a_many_chunk_table(chunk_sizes: list[int], rnd) -> None:
    import numpy as np

    schema = pa.schema([("x", pa.int64()), ("s", pa.string())])
    batches = [pa.table({"x": list(range(sum(chunk_sizes[:i]), sum(chunk_sizes[: i + 1]))), "s": [f"r{j}" for j in range(n)]},
                        schema=schema) for i, n in enumerate(chunk_sizes)]
    table = pa.concat_tables(batches)
    indices = np.array([rnd.randrange(table.num_rows) for _ in range(rnd.randrange(table.num_rows + 1))] if table.num_rows else [], dtype=np.int64)
    rows, order = parallel.gather_rows(table, indices)
    assert rows.take(pa.array(order, pa.int64())).equals(table.take(pa.array(indices, pa.int64())))
