"""Every command echobench ships, old paths and new: ``--help`` prints help and exits 0, a nonsense option is one
line on stderr and exit 2; neither writes anything where it runs. (The old module paths are the new modules:
unit/test_entrypoints.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT_DIR

PY = sys.executable
ECHOBENCH = str(Path(sys.executable).with_name("echobench"))  # the console script ([project.scripts])
SUBCOMMANDS = ["run", "ab", "pythons", "overload", "bench", "compare", "cost", "calibrate", "report"]

ENTRY_POINTS = {
    "loadgen/run.py": [PY, str(Path(ROOT_DIR) / "loadgen" / "run.py")],
    "-m loadgen.run": [PY, "-m", "loadgen.run"],
    "-m loadgen": [PY, "-m", "loadgen"],
    "echobench": [ECHOBENCH],
    **{f"echobench {c}": [ECHOBENCH, c] for c in SUBCOMMANDS},
    **{f"-m loadgen {c}": [PY, "-m", "loadgen", c] for c in SUBCOMMANDS},
    # the suite's modules, where they live now and where they used to (thin aliases)
    **{f"-m loadgen.suite.{m}": [PY, "-m", f"loadgen.suite.{m}"] for m in ("ab", "pythons", "overload", "bench", "compare", "cost", "calibrate", "report")},
    **{f"-m loadgen.{m}": [PY, "-m", f"loadgen.{m}"] for m in ("bench", "compare", "cost", "calibrate", "report")},
    "-m servers": [PY, "-m", "servers"],
    "-m servers.tls": [PY, "-m", "servers.tls"],
}


def run_in(tmp_path, argv):
    return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT_DIR)})


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_help_prints_help_and_exits_0_writing_nothing(tmp_path, name):
    out = run_in(tmp_path, ENTRY_POINTS[name] + ["--help"])
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower() and "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_a_nonsense_option_is_one_line_and_exit_2_writing_nothing(tmp_path, name):
    out = run_in(tmp_path, ENTRY_POINTS[name] + ["--no-such-option"])
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1 and "error" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert out.stdout == ""
    assert list(tmp_path.iterdir()) == []
