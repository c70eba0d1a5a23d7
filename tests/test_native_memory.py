"""The native engine under memory checkers: valgrind memcheck (leaks, invalid reads and writes) and a build
with AddressSanitizer and UndefinedBehaviorSanitizer, each running tests/support/native_exercise.py, which drives
every path of the engine (whole, split, corrupt, misplaced, extra and missing echoes, EOF, open loop, full
sample arrays, timeouts, bad arguments) over socketpairs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from loadgen.engine import native

from conftest import ROOT_DIR, require_tool

pytestmark = pytest.mark.skipif(native.UNAVAILABLE is not None and not os.environ.get("CI"),
                                reason=str(native.UNAVAILABLE))

EXERCISE = ROOT_DIR / "tests" / "support" / "native_exercise.py"


def test_valgrind_finds_no_leak_and_no_invalid_access_in_the_engine(tmp_path):
    valgrind = require_tool("valgrind")
    log = tmp_path / "vg.log"
    env = {**os.environ, "PYTHONMALLOC": "malloc"}  # every Python allocation visible to memcheck
    out = subprocess.run([valgrind, "--leak-check=full", "--show-leak-kinds=definite", "--track-origins=no",
                          f"--log-file={log}", sys.executable, str(EXERCISE), "1"],
                         cwd=ROOT_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    text = log.read_text()
    # each error record is a block of lines; keep those whose stack passes through the extension
    records = re.split(r"\n==\d+== \n", text)
    ours = [r for r in records if "_native" in r and ("Invalid" in r or "definitely lost" in r
                                                        or "uninitialised" in r or "Mismatched" in r)]
    assert not ours, "\n\n".join(ours)[:6000]


def _asan_build(tmp_path: Path) -> Path:
    """A copy of the package whose extension is built with -fsanitize=address,undefined (gcc's runtimes)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    tree = tmp_path / "tree"
    shutil.copytree(ROOT_DIR / "loadgen", tree / "loadgen", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copytree(ROOT_DIR / "servers", tree / "servers", ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "tests" / "support").mkdir(parents=True)  # where the exercise finds the package: two folders up
    shutil.copy(EXERCISE, tree / "tests" / "support")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    so = tree / "loadgen" / "engine" / f"_native{suffix}"
    cmd = [cc, "-shared", "-fPIC", "-g", "-O1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
           "-fno-sanitize-recover=all", "-Wall", "-Wextra", "-Wno-missing-field-initializers", "-Werror",
           f"-I{sysconfig.get_paths()['include']}", str(ROOT_DIR / "loadgen" / "engine" / "_native.c"), "-o", str(so)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0 and "sanitize" in out.stderr and not os.environ.get("CI"):
        pytest.skip(f"this compiler cannot build with sanitizers: {out.stderr.strip()[-300:]}")
    assert out.returncode == 0, out.stderr
    return tree


def test_address_and_undefined_behaviour_sanitizers_find_nothing(tmp_path):
    tree = _asan_build(tmp_path)
    runtime = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(runtime):
        pytest.skip("gcc's libasan runtime is not installed")
    env = {**os.environ, "LD_PRELOAD": runtime,
           # Python itself keeps memory until exit: leaks are valgrind's job above, errors are this one's
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1:exitcode=86",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    out = subprocess.run([sys.executable, str(tree / "tests" / "support" / "native_exercise.py"), "2"], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "every path ran" in out.stderr
    assert "runtime error" not in out.stderr, out.stderr[-4000:]
