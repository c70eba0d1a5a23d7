"""Fixtures: real server processes from the registry, always cleaned up."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import registry  # noqa: E402

from support.serverproc import ROOT as ROOT_DIR  # noqa: E402,F401
from support.serverproc import ServerProcess


@pytest.fixture(scope="session", autouse=True)
def every_result_document_validates(tmp_path_factory):
    """At the end of the session: every load-generator result document any test wrote under pytest's temporary
    folders (subprocesses' included) validates against docs/result-schema.json (the schema's own tests are in
    tests/unit/test_result_schema.py). A document with another version, a kind, or no result is not one."""
    yield
    try:
        import jsonschema
    except ImportError:  # the test extra not installed: the schema tests skip too
        return
    import json

    validator = jsonschema.Draft202012Validator(json.loads((Path(ROOT_DIR) / "docs" / "result-schema.json").read_text()))
    bad, seen = [], 0
    for p in Path(tmp_path_factory.getbasetemp()).rglob("*.json"):
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if not (isinstance(doc, dict) and doc.get("schema_version") == 2 and "kind" not in doc
                and isinstance(doc.get("result"), dict) and "config" in doc):
            continue
        seen += 1
        err = next(iter(validator.iter_errors(doc)), None)
        if err is not None:
            bad.append(f"{p}: {err.message} at {'/'.join(map(str, err.absolute_path))}")
    assert not bad, f"{len(bad)} of {seen} result documents break docs/result-schema.json: " + "; ".join(bad[:5])


def model_params(names):
    """Every registry model; one that cannot run here is skipped with the reason, except in CI
    (CI=true), where .ci/run installs everything and a missing model must fail, not vanish."""
    params = []
    for name in names:
        reason = registry.get(name).unavailable_reason()
        marks = [pytest.mark.skip(reason=f"{name}: {reason}")] if reason and not os.environ.get("CI") else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


MODEL_PARAMS = model_params(registry.MODELS)


def engine_params() -> list:
    """The load generator's two engines. Where the native one was not built (no C compiler) its tests skip with
    the reason, except in CI (CI=true), where a missing extension must fail, as a missing Go model does."""
    from loadgen.engine import native

    reason = native.UNAVAILABLE
    marks = [pytest.mark.skip(reason=reason)] if reason and not os.environ.get("CI") else []
    return [pytest.param("python", id="python-engine"), pytest.param("native", id="native-engine", marks=marks)]


ENGINE_PARAMS = engine_params()


@pytest.fixture(params=ENGINE_PARAMS)
def engine(request) -> str:
    """Each load-generator test that takes this runs once per engine: the same truth for both."""
    return request.param


def transport_params(transport: str) -> list:
    """``MODEL_PARAMS`` for the models whose registry entry claims ``transport``."""
    return model_params([m.name for m in registry.MODELS.values() if transport in m.transports])


def assert_clean_exit(server: ServerProcess, rc, elapsed, leftover) -> None:
    err = server.stderr_after_exit()
    assert rc == 0, f"{server.model}: exit code {rc} after {elapsed:.2f} s (None: still running); stderr:\n{err}"
    assert not leftover, f"{server.model}: worker pids {leftover} outlived the server"
    assert "Traceback" not in err, f"{server.model} printed a traceback:\n{err}"


@pytest.fixture
def start_server():
    """``start_server(model, *args)`` -> ServerProcess; each is stopped and checked at teardown."""
    started: list[ServerProcess] = []

    def start(model: str, *args: str, **kw) -> ServerProcess:
        s = ServerProcess(model, *args, **kw)
        started.append(s)
        return s

    yield start
    failures = []
    for s in started:
        if s.proc.poll() is not None:
            s.kill()
            continue
        rc, elapsed, leftover = s.stop(signal.SIGTERM)
        try:
            assert_clean_exit(s, rc, elapsed, leftover)
        except AssertionError as exc:
            failures.append(str(exc))
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture(params=MODEL_PARAMS)
def model(request) -> str:
    return request.param


@pytest.fixture
def server(model, start_server) -> ServerProcess:
    return start_server(model)


@pytest.fixture(scope="module", params=MODEL_PARAMS)
def shared_server(request):
    """One server per model for many hypothesis examples; checked at module teardown."""
    s = ServerProcess(request.param)
    yield s
    rc, elapsed, leftover = s.stop(signal.SIGTERM)
    assert_clean_exit(s, rc, elapsed, leftover)


@pytest.fixture
def fault_server():
    """``fault_server(mode, *args, script="fault_server.py")``: a deliberately broken server from tests/support/,
    started like a model (ready line on stdout) and killed at teardown."""
    started: list[ServerProcess] = []

    def start(mode: str, *args: str, script: str = "fault_server.py") -> ServerProcess:
        s = ServerProcess(f"{script}:{mode}", argv=[sys.executable, str(ROOT_DIR / "tests" / "support" / script), mode, *args])
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.stop()
        s.kill()


def raise_own_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} file descriptors; hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def require_tool(name: str) -> str:
    """Path of an external tool; in CI (CI=true) a missing one fails instead of skipping."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path
