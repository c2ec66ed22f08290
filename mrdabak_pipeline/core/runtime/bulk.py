"""Helpers for the hot paths that turn a million rows into Python objects (and back).

The preparation chain builds millions of small, acyclic objects (turns, order-state dicts,
strings). CPython's cyclic garbage collector runs after every few hundred container allocations
and, as the heap grows, repeatedly walks everything already built, so the cost of a stage grew
faster than its input (measured: building 20k sessions' turns took 3x longer with the collector
on). Reference counting still frees everything these functions drop; only the search for
reference cycles waits until the bulk work is done.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from typing import Any

from mrdabak_pipeline.core.domain import Turn


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


_TURN_FIELDS = ("role", "content", "order_state", "created_at", "message_id")


def _turn_setters() -> tuple[Callable[[Turn, Any], None], ...] | None:
    """The slot setters of `Turn`, when it is still the plain frozen slots dataclass of these fields."""
    if tuple(f.name for f in fields(Turn)) != _TURN_FIELDS or hasattr(Turn, "__post_init__"):
        return None
    setters = tuple(getattr(Turn, name, None) for name in _TURN_FIELDS)
    if not all(type(s).__name__ == "member_descriptor" for s in setters):
        return None
    return tuple(s.__set__ for s in setters)  # type: ignore[union-attr]


def build_turns(
    roles: Iterable[str],
    contents: Iterable[str],
    states: Iterable[dict[str, Any] | None],
    created: Iterable[datetime | None],
    message_ids: Iterable[int | None],
) -> list[Turn]:
    """``[Turn(*values) for values in zip(...)]``, about twice as fast.

    A frozen dataclass sets each field through ``object.__setattr__``; for a million turns that
    is a second. `Turn` has no ``__post_init__`` and no validation, so filling its slots
    directly gives equal objects; if `Turn` ever changes shape, this falls back to its
    constructor.
    """
    setters = _SETTERS
    if setters is None:
        return [Turn(*values) for values in zip(roles, contents, states, created, message_ids, strict=True)]
    new = object.__new__
    s_role, s_content, s_state, s_created, s_id = setters
    out = []
    append = out.append
    for role, content, state, at, mid in zip(roles, contents, states, created, message_ids, strict=True):
        t = new(Turn)
        s_role(t, role)
        s_content(t, content)
        s_state(t, state)
        s_created(t, at)
        s_id(t, mid)
        append(t)
    return out


_SETTERS = _turn_setters()
