"""Variant specs (loadgen/suite/variants.py): parsing, one line per bad spec. Pure: no interpreter is run."""

from __future__ import annotations

import pytest

from loadgen.suite import variants as vr


@pytest.mark.parametrize("spec, interpreter, pins, ref", [
    ("3.13", "3.13", (), None),
    ("python3.12", "3.12", (), None),
    ("py3.10", "3.10", (), None),
    ("current", "current", (), None),
    ("3.13+uvloop==0.19.0", "3.13", ("uvloop==0.19.0",), None),
    ("3.13+uvloop==0.21.0+gevent>=24", "3.13", ("uvloop==0.21.0", "gevent>=24"), None),
    ("/opt/py/bin/python3+trio==0.25.0@origin/main", "/opt/py/bin/python3", ("trio==0.25.0",), "origin/main"),
    ("3.11@v1.2", "3.11", (), "v1.2"),
])
def test_good_specs(spec, interpreter, pins, ref):
    v = vr.parse(spec)
    assert (v.interpreter, v.pins, v.ref, v.spec) == (interpreter, pins, ref, spec)


@pytest.mark.parametrize("spec, fragment", [
    ("", "empty variant"),
    ("fast", "the interpreter is"),
    ("3", "the interpreter is"),
    ("python", "the interpreter is"),
    ("3.13+uvloop", "pin a version of uvloop"),
    ("3.13+==1.0", "not a package requirement"),
    ("3.13+uv loop==1", "not a package requirement"),
    ("3.13@", "a git ref after '@'"),
    ("3.13@-rf", "a git ref after '@'"),
])
def test_bad_specs_are_one_line(spec, fragment):
    with pytest.raises(vr.VariantError) as e:
        vr.parse(spec)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_labels_name_what_a_variant_is():
    assert vr.parse("3.13+uvloop==0.19.0@origin/main").label == "py3.13+uvloop-0.19.0@origin-main"
    assert vr.parse("current").label == "current"
    assert vr.parse("/opt/py/bin/python3").label == "opt-py-bin-python3"


def test_the_cache_key_changes_with_what_defines_the_environment():
    from dataclasses import replace

    v = replace(vr.parse("3.12+uvloop==0.19.0"), python="/usr/bin/python3", version="3.12.1")
    key = vr.cache_key(v, ("trio",))
    assert key == vr.cache_key(v, ("trio",))  # stable
    assert key != vr.cache_key(v, ("trio", "gevent"))  # another package
    assert key != vr.cache_key(replace(v, pins=("uvloop==0.21.0",)), ("trio",))  # another pin
    assert key != vr.cache_key(replace(v, version="3.12.2"), ("trio",))  # another interpreter build
    with pytest.raises(ValueError):
        vr.cache_key(vr.parse("3.12"), ())  # not located yet
