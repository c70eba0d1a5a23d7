"""The suite's modules moved (loadgen/suite/, loadgen/modes/); their old import paths still work, as the modules
themselves (every command, old path and new, run as a user runs it: tests/test_entrypoints.py)."""

from __future__ import annotations


def test_old_module_paths_are_the_new_modules():
    """``loadgen.bench`` and friends are the moved modules themselves (not copies): patching one patches both."""
    import importlib

    for old, new in (("loadgen.bench", "loadgen.suite.bench"), ("loadgen.report", "loadgen.suite.report"),
                     ("loadgen.compare", "loadgen.suite.compare"), ("loadgen.cost", "loadgen.suite.cost"),
                     ("loadgen.calibrate", "loadgen.suite.calibrate"), ("loadgen.capacity", "loadgen.modes.capacity"),
                     ("loadgen.idle", "loadgen.modes.idle"), ("loadgen.cluster", "loadgen.modes.cluster"),
                     ("loadgen.hostagent", "loadgen.modes.hostagent")):
        assert importlib.import_module(old) is importlib.import_module(new)
