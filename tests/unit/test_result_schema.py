"""The result document's JSON Schema (docs/result-schema.json) and the version check every reader uses
(loadgen/result.py): pure. Real runs' documents are validated in tests/test_result_schema.py, and every result
document any test wrote is validated at the end of the session (conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen import result

from conftest import ROOT_DIR

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads((Path(ROOT_DIR) / "docs" / "result-schema.json").read_text())


def validate(doc: dict) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)


def test_the_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["properties"]["schema_version"] == {"const": result.RUN_VERSION}


def test_the_schema_rejects_a_document_that_breaks_it(tmp_path):
    doc = {"schema_version": 2, "timestamp": "x", "env": {}, "config": {}, "target": {}, "pinning": {}, "fd_limit": 1,
           "result": {}}
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate({**doc, "schema_version": 3})


@pytest.mark.parametrize("kind", [result.RUN, result.SUITE, result.COST, result.AB, result.IDLE, result.PAIRED_CELL])
def test_every_reader_refuses_another_version_or_kind_in_one_line(kind):
    good = {"schema_version": result.version(kind), **({} if kind is result.RUN else {"kind": kind})}
    assert result.check(good, kind, "f.json") is good
    for bad in ({**good, "schema_version": result.version(kind) + 1}, {**good, "kind": "something-else"}, [1, 2]):
        if kind is result.RUN and isinstance(bad, dict) and bad.get("kind") == "something-else":
            continue  # a result document carries no kind
        with pytest.raises(result.DocumentError) as e:
            result.check(bad, kind, "f.json")
        assert "\n" not in str(e.value) and str(e.value).startswith("f.json: ")
