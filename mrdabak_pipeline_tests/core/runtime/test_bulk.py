"""The bulk-building helpers: GC pause restores state, fast turns equal constructed turns."""

from __future__ import annotations

import dataclasses
import gc
from datetime import datetime

import pytest

from mrdabak_pipeline.core.domain import Turn
from mrdabak_pipeline.core.runtime.bulk import build_turns, paused_gc


def test_paused_gc_restores_the_previous_state() -> None:
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block found it disabled: leaves it so
    assert gc.isenabled()
    with pytest.raises(ValueError), paused_gc():
        raise ValueError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # a caller's choice is respected
    finally:
        gc.enable()


def test_build_turns_equals_the_constructor() -> None:
    cols = (["user", "assistant"], ["안녕", "네"], [None, {"quantity": 2}], [datetime(2025, 3, 1), None], [1, None])
    built = build_turns(*cols)
    assert built == [Turn(*values) for values in zip(*cols, strict=True)]
    assert all(type(t) is Turn for t in built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built[0].role = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        build_turns(["user"], [], [], [], [])
