"""Variants' interpreters and cached environments (loadgen/suite/variants.py), on real interpreters and real
virtual environments (built without packages, so no registry is needed)."""

from __future__ import annotations

import json
import platform
import sys

import pytest

from loadgen.suite import variants as vr


def test_the_current_interpreter_is_found_and_asked_its_version():
    v = vr.locate(vr.parse("current"))
    assert v.python == sys.executable and v.version == platform.python_version()
    assert vr.locate(vr.parse(sys.executable)).version == platform.python_version()  # by path


@pytest.mark.parametrize("spec, fragment", [("2.1", "no Python 2.1 here"),
                                            ("/no/such/python", "no such executable")])
def test_a_missing_interpreter_is_one_line(spec, fragment):
    with pytest.raises(vr.VariantError) as e:
        vr.locate(vr.parse(spec))
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_the_environment_is_reused_rebuilt_when_the_spec_changes_and_a_half_built_one_is_rebuilt(tmp_path):
    calls = []

    def fake_install(python, requirements, v):  # records what would be installed; the registry is not needed
        calls.append(tuple(requirements))

    v = vr.locate(vr.parse("current"))
    first = vr.ensure(v, packages=(), cache=tmp_path)
    assert (first / "bin" / "python").exists() and vr.is_built(first, vr.cache_key(v, ()))
    (first / "sentinel").write_text("kept")
    assert vr.ensure(v, packages=(), cache=tmp_path) == first and (first / "sentinel").exists()  # reused
    # another spec: another folder, built with its own requirements
    pinned = vr.locate(vr.parse("current+uvloop==0.19.0"))
    second = vr.ensure(pinned, packages=("trio",), cache=tmp_path, install=fake_install)
    assert second != first and calls == [("trio", "uvloop==0.19.0")]
    assert json.loads((second / vr.MARKER).read_text())["spec"] == "current+uvloop==0.19.0"
    # a build cut short (no marker: it is written last) is not used: it is built again
    (first / vr.MARKER).unlink()
    rebuilt = vr.ensure(v, packages=(), cache=tmp_path)
    assert rebuilt == first and not (first / "sentinel").exists() and vr.is_built(first, vr.cache_key(v, ()))


def test_an_install_that_fails_is_one_line_and_leaves_nothing_behind(tmp_path):
    def failing(python, requirements, v):
        raise vr.VariantError(f"variant {v.spec!r}: cannot install {' '.join(requirements)}: no matching distribution")

    v = vr.locate(vr.parse("current+uvloop==0.0.1"))
    with pytest.raises(vr.VariantError) as e:
        vr.ensure(v, packages=(), cache=tmp_path, install=failing)
    assert "no matching distribution" in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_a_server_runs_in_a_variants_interpreter_and_a_missing_package_is_one_line(tmp_path):
    """The server side runs from the variant's environment (its own site-packages); the load generator stays
    this one. A model the variant lacks a package for is refused at start, with the server's own reason."""
    import psutil

    from loadgen.config import LoadConfig
    from loadgen.runner import plan_cpus
    from loadgen.suite.paired import run_slice
    from loadgen.target import ManagedServer, TargetError

    v = vr.locate(vr.parse("current"))
    python = str(vr.ensure(v, packages=(), cache=tmp_path) / "bin" / "python")  # no uvloop, gevent or trio in it
    client, server_cpus = plan_cpus(LoadConfig(server="x"))
    s = ManagedServer("asyncio-protocol", "127.0.0.1", None, server_cpus, python=python)
    try:
        assert psutil.Process(s.pid).cmdline()[0] == python
        sl = run_slice(LoadConfig(conns=2, size=256, duration=0.1, warmup=0.05, cpus=client, server_cpus=server_cpus,
                                  engine="python", quiet=True), s.pid, s.addr)
        assert sl.messages > 0 and sl.errors == 0
    finally:
        s.stop()
    with pytest.raises(TargetError) as e:
        ManagedServer("uvloop-protocol", "127.0.0.1", None, server_cpus, python=python)
    assert "uvloop" in str(e.value) and "\n" not in str(e.value)
