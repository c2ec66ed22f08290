"""`paused_gc`: for the hot paths that turn a million rows into Python objects (and back).

The preparation chain builds millions of small, acyclic objects (turns, order-state dicts,
strings). CPython's cyclic garbage collector runs after every few hundred container allocations
and, as the heap grows, repeatedly walks everything already built, so the cost of a stage grew
faster than its input (measured: building 20k sessions' turns took 3x longer with the collector
on). Reference counting still frees everything these functions drop; only the search for
reference cycles waits until the bulk work is done.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Suspend the cyclic garbage collector inside the block, and restore its previous state.

    Nesting and threads are safe: only the outermost block that found the collector enabled
    turns it back on. Use it only around code that allocates many objects and creates no
    reference cycles of its own.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
