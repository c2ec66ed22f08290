"""Run independent chunks of a stage on every core, results back in order.

Why processes: cleaning, pseudonymization, augmentation, formatting and validation are Python
loops over sessions, so threads would queue on the GIL. The chunks are whole sessions (see
`session_slices`), every stage is deterministic per session, and the results are merged in chunk
order, so a parallel run writes exactly what a serial run writes (tests hold both to that).

Design choices, in order of how much they matter:

* One pool per process, created on first use and reused by every stage of a run (a Dagster run of
  a backfill calls several stages), shut down at exit. Its workers come from a *forkserver* that
  preloads the core modules: the Dagster run process has threads of its own, and forking a
  threaded process can copy a held lock into the child; the forkserver is a fresh single-threaded
  process, and each worker is a cheap fork of it.
* Small inputs never leave the process: a stage asks for at most one chunk per `min_rows` rows,
  and one chunk runs inline. A nightly run of one day therefore runs serially, as before.
* Environment the stages read (``MRDABAK_*``, ``TIKTOKEN_*``) travels with each task, because the
  forkserver's environment is frozen when it starts and tests change it per test.
* ``MRDABAK_WORKERS`` sets the number of processes (default: the CPUs this process may use;
  ``1`` turns the pool off).
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import itertools
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.reduction import ForkingPickler
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

WORKERS_ENV = "MRDABAK_WORKERS"
#: Environment variables the stage functions read; copied into each task (see module docstring).
FORWARDED_ENV_PREFIXES = ("MRDABAK_", "TIKTOKEN_")
#: Imported once by the forkserver, so each forked worker starts with them loaded.
PRELOAD = ["mrdabak_pipeline.core.runtime.worker_preload"]
#: Chunks per worker: more than one evens out uneven days and keeps each worker's share of the
#: Python objects (what bounds memory) to a fraction of the input.
CHUNKS_PER_WORKER = 4
#: Memory a worker may keep between chunks (above what it started with) for the next chunk to reuse.
WORKER_KEEP_MIB = 192

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()
_active = 0  # imap calls using the pool right now (threads of one process may share it)
_pool: ProcessPoolExecutor | None = None
_pool_size = 0


def _table_to_ipc(table: pa.Table) -> tuple[Callable[[pa.Buffer], pa.Table], tuple[pa.Buffer]]:
    """How a table crosses to or from a worker: as an Arrow IPC stream of its rows only.

    Arrow's own pickling of a slice carries the buffers of the whole table it was cut from
    (measured: each 1/16 slice of a million-row table pickled as all of its 343 MiB); the IPC
    writer truncates every buffer to the slice.
    """
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write(table)
    return _table_from_ipc, (sink.getvalue(),)


def _table_from_ipc(data: pa.Buffer) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


ForkingPickler.register(pa.Table, _table_to_ipc)


def worker_count() -> int:
    """Processes a stage may use: ``MRDABAK_WORKERS`` or the CPUs available to this process."""
    configured = os.environ.get(WORKERS_ENV, "").strip()
    if configured:
        return max(1, int(configured))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def chunk_count(n_rows: int, min_rows: int, workers: int | None = None, per_worker: int = CHUNKS_PER_WORKER) -> int:
    """How many chunks `n_rows` rows are worth: one per `min_rows`, at most `per_worker` each."""
    workers = worker_count() if workers is None else workers
    if workers <= 1 or n_rows < 2 * min_rows:
        return 1
    return max(1, min(workers * per_worker, n_rows // min_rows))


def release_memory() -> None:
    """Hand freed memory back to the OS: Arrow's allocator keeps freed buffers for reuse, and
    glibc's malloc keeps freed heap pages, so a process that handled one big chunk would otherwise
    stay that big for the rest of the run."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    if _malloc_trim is not None:
        _malloc_trim(0)


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


_malloc_trim = _load_malloc_trim()


def _forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


def _resident_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


_worker_baseline_mib: float | None = None  # a worker's resident memory before its first chunk


def _run_task(fn: Callable[[Any], Any], env: dict[str, str], item: Any) -> Any:
    """Worker side: take the parent's stage environment, then run one chunk."""
    global _worker_baseline_mib
    for key in [k for k in os.environ if k.startswith(FORWARDED_ENV_PREFIXES) and k not in env]:
        del os.environ[key]
    os.environ.update(env)
    try:
        if _worker_baseline_mib is None and os.path.exists("/proc/self/statm"):
            _worker_baseline_mib = _resident_mib()
        # The stages build millions of acyclic objects: the cyclic collector would walk the
        # chunk's heap again and again (see `bulk.paused_gc`); one collection after the chunk
        # (in `release_memory`) finds whatever cycles there are.
        gc.disable()
        return fn(item)
    finally:
        gc.enable()
        # A worker's peak is one chunk, not the sum of what it ever held. The allocators keep a
        # freed chunk's memory for the next chunk, which is faster than handing it back and
        # faulting it in again, so it is only handed back once it passes WORKER_KEEP_MIB.
        if _worker_baseline_mib is None or _resident_mib() - _worker_baseline_mib > WORKER_KEEP_MIB:
            release_memory()


def shutdown() -> None:
    global _pool
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=True, cancel_futures=True)
            _pool = None


atexit.register(shutdown)


def _get_pool(workers: int) -> ProcessPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != workers:
            if _pool is not None:
                _pool.shutdown(wait=True)
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            _pool, _pool_size = ProcessPoolExecutor(workers, mp_context=ctx), workers
        return _pool


def warm_up(workers: int | None = None) -> threading.Event:
    """Start the pool's processes in the background; the event is set once they can take work.

    Starting the forkserver and its workers takes seconds (imports, the token vocabulary): a
    stage can do its first items itself meanwhile instead of waiting (see `stages.extract`).
    """
    workers = worker_count() if workers is None else workers
    ready = threading.Event()
    if workers <= 1:
        ready.set()
        return ready

    def start() -> None:
        try:
            pool = _get_pool(workers)
            for future in [pool.submit(os.getpid) for _ in range(workers)]:
                future.result()
        except Exception:  # noqa: BLE001, S110 - the stage's own imap call will report it
            pass
        finally:
            ready.set()

    threading.Thread(target=start, name="mrdabak-pool-start", daemon=True).start()
    return ready


def imap(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> Iterator[R]:
    """``fn(item)`` for each item, yielded in item order; inline when one worker or one item.

    `fn` must be a module-level function and items/results picklable (Arrow tables are: their
    buffers are copied, not converted). Items are drawn lazily and at most one more than the workers are in
    flight, so a generator of big chunks is never materialized at once. A worker that dies
    (killed for memory, say) raises `BrokenProcessPool` here and the pool is rebuilt next time.
    """
    workers = worker_count() if workers is None else workers
    iterator = iter(items)
    head = list(itertools.islice(iterator, 2))
    if workers <= 1 or len(head) <= 1:
        yield from (fn(item) for item in itertools.chain(head, iterator))
        return
    pool = _get_pool(workers)
    env = _forwarded_env()
    pending: deque[Future[R]] = deque()
    global _active
    with _lock:
        _active += 1
    finished = False
    try:
        for i, item in enumerate(itertools.chain(head, iterator)):
            pending.append(pool.submit(_run_task, fn, env, item))
            if i + 1 == workers:  # every worker has a chunk: meanwhile, hand back what the
                release_memory()  # previous stage dropped (its input, say) before this one grows
            if len(pending) > workers:  # one queued behind the running ones: memory stays flat
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
        release_memory()  # the chunks sent and received are garbage now
        finished = True
    except BrokenProcessPool:
        shutdown()
        raise
    finally:
        for future in pending:
            future.cancel()
        _stage_done(workers, renew=finished)


def _stage_done(workers: int, renew: bool) -> None:
    """An imap call is over; if it finished and no other thread is using the pool, replace the
    workers with fresh forks, started in the background for the next stage.

    A worker that ran one stage's chunks starts the next stage with that stage's heap (measured:
    the dataset stage ran 1.4x slower on workers that had cleaned and augmented before); a fresh
    fork of the forkserver costs milliseconds, and the next stage finds it ready.
    """
    global _pool, _active
    retired = None
    with _lock:
        _active -= 1
        if renew and _active == 0:
            retired, _pool = _pool, None
    if retired is not None:
        retired.shutdown(wait=True)
        warm_up(workers)


def session_slices(table: pa.Table, parts: int, column: str = "session_id") -> list[pa.Table]:
    """`table` cut into at most `parts` contiguous slices, never splitting a session's rows.

    A cut is only made where every session id seen before it has no row after it, so each slice
    holds whole sessions and the slices, in order, keep the table's first-appearance order of
    sessions: a stage that works per session gives the same rows per slice as on the whole table.
    """
    n = table.num_rows
    if parts <= 1 or n < 2:
        return [table]
    codes = pc.fill_null(table.column(column), "").combine_chunks().dictionary_encode().indices
    gid = codes.to_numpy(zero_copy_only=False).astype(np.int64)
    last = np.zeros(int(gid.max()) + 1, dtype=np.int64)
    np.maximum.at(last, gid, np.arange(n, dtype=np.int64))
    reach = np.maximum.accumulate(last[gid])  # the last row any session started so far ends at
    valid = np.flatnonzero(reach[:-1] < np.arange(1, n)) + 1  # cut before row i is safe
    if not len(valid):
        return [table]
    wanted = [n * i // parts for i in range(1, parts)]
    cuts = sorted({int(valid[min(np.searchsorted(valid, w), len(valid) - 1)]) for w in wanted})
    bounds = [0, *cuts, n]
    return [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def gather_rows(table: pa.Table, indices: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """(the rows at `indices`, grouped by record batch; the order that puts them as asked).

    ``rows.take(order)`` is ``table.take(indices)``. The caller can hand the reordering to a
    worker process: the run process then copies each row once, not twice.
    """
    indices = np.asarray(indices, dtype=np.int64)  # Arrow's sort gives uint64: keep the arithmetic integral
    batches = table.to_batches()
    if len(batches) <= 1 or not len(indices):
        return table.take(pa.array(indices, pa.int64())), np.arange(len(indices))
    starts = np.cumsum([0] + [b.num_rows for b in batches], dtype=np.int64)
    which = np.searchsorted(starts, indices, side="right") - 1
    pieces, positions = [], []
    for b in np.unique(which):
        picked = np.flatnonzero(which == b)
        pieces.append(batches[b].take(pa.array(indices[picked] - starts[b])))
        positions.append(picked)
    return pa.Table.from_batches(pieces, schema=table.schema), np.argsort(np.concatenate(positions), kind="stable")


def concat(tables: Iterable[pa.Table], schema: pa.Schema | None = None) -> pa.Table:
    """Concatenate chunk results (an empty list gives an empty table of `schema`)."""
    tables = list(tables)
    if not tables:
        if schema is None:
            raise ValueError("no tables and no schema")
        return schema.empty_table()
    return pa.concat_tables(tables)
