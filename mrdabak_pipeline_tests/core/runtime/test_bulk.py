"""The GC pause restores the collector's previous state."""

from __future__ import annotations

import gc

import pytest

from mrdabak_pipeline.core.runtime.bulk import paused_gc


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
