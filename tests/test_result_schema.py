"""The result document's JSON Schema (docs/result-schema.json) and the one version check every reader uses
(loadgen/result.py). conftest.py also validates every result document any test wrote, at the end of the session."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadgen import result

from conftest import ROOT_DIR

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads((Path(ROOT_DIR) / "docs" / "result-schema.json").read_text())


def validate(doc: dict) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)


@pytest.mark.parametrize("args", [
    ["--server", "asyncio-protocol", "--conns", "2"],  # closed loop, TCP, the native engine where it was built
    ["--server", "asyncio-protocol", "--conns", "2", "--rate", "2000"],  # open loop
    ["--server", "asyncio-protocol", "--conns", "2", "--transport", "udp"],  # UDP: the udp counts
    ["--server", "selectors", "--conns", "2", "--transport", "unix", "--engine", "python"],
])
def test_documents_of_every_kind_of_run_validate(tmp_path, args):
    out = tmp_path / "doc.json"
    run = subprocess.run([sys.executable, str(Path(ROOT_DIR) / "loadgen" / "run.py"), *args, "--duration", "0.3",
                          "--warmup", "0.1", "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    doc = json.loads(out.read_text())
    validate(doc)
    assert result.check(doc, result.RUN, out) is doc
