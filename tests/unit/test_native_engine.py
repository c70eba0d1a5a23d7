"""The native (C) load-generator engine without running it: it is built where it should be, and a run resolves to
the engine documented for its transport and depth (its runs and byte checks: tests/test_native_engine.py)."""

from __future__ import annotations

import os

import pytest

from loadgen.engine import native


def test_the_native_engine_is_built_in_ci():
    """CI installs a compiler: there, a silent fallback to the Python engine must not pass for the fast path."""
    if not os.environ.get("CI"):
        pytest.skip("checked in CI (CI=true) only")
    from loadgen.engine import _native  # noqa: F401  (imports the extension itself, not the fallback)

    assert native.UNAVAILABLE is None


def test_engine_resolution():
    assert native.resolve("python", "tcp", 1) == ("python", None)
    engine, note = native.resolve("auto", "udp", 1)
    assert engine == "python" and "UDP" in note
    with pytest.raises(ValueError, match="UDP"):
        native.resolve("native", "udp", 1)
    if native.UNAVAILABLE is None:
        assert native.resolve("auto", "tcp", 1) == ("native", None)
        assert native.resolve("native", "unix", 8) == ("native", None)
        with pytest.raises(ValueError, match="in flight"):
            native.resolve("native", "tcp", native.MAX_DEPTH + 1)
