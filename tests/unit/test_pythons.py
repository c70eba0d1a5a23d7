"""make bench-pythons (loadgen/suite/pythons.py, pythons_report.py) without running anything: the options, the
choice of reference, which model runs where, the variants' requirements, and the report drawn from a hand-made
document (the end-to-end run on real interpreters: tests/test_pythons.py). Nothing here asserts a time."""

from __future__ import annotations

import json

import pytest

from loadgen.suite import pythons as py
from loadgen.suite import pythons_report as rep
from loadgen.suite import variants as vr
from loadgen.suite.sides import Side


def ready(key, version, models=None, spec=None):
    v = vr.Variant(spec=spec or key, interpreter=version.rsplit(".", 1)[0], python="/x/python", version=version)
    names = ["asyncio-protocol", "selectors", "uvloop-protocol"]
    return py.Ready(v, Side(key), folder=None, packages={}, build={}, python_models=names,
                    models={n: None for n in names} | (models or {}))


def test_the_reference_is_the_newest_interpreter_the_first_given_of_equals_or_the_one_named():
    rs = [ready("py3.10.13", "3.10.13"), ready("py3.13.0", "3.13.0"), ready("py3.13.0+uvloop", "3.13.0"),
          ready("py3.12.1", "3.12.1")]
    assert py.pick_reference(rs, None).side.key == "py3.13.0"
    assert py.pick_reference(rs, "py3.12.1").side.key == "py3.12.1"
    with pytest.raises(py.UsageError) as e:
        py.pick_reference(rs, "3.9")
    assert "not one of the variants" in str(e.value) and "\n" not in str(e.value)
    assert py._version_key("3.13.0rc1") > py._version_key("3.12.9")


def test_a_variant_given_twice_gets_a_second_key():
    assert py.unique_keys(["a", "b", "a", "a"]) == ["a", "b", "a#2", "a#3"]


def test_models_run_where_they_can_and_an_unknown_one_is_usage():
    rs = [ready("a", "3.13.0"), ready("b", "3.12.1", {"uvloop-protocol": "needs the 'uvloop' package"})]
    models, missing = py.plan_models(py.PythonsConfig(models=("uvloop-protocol", "selectors")), rs)
    assert models == ["uvloop-protocol", "selectors"]
    assert missing == {"uvloop-protocol": {"b": "needs the 'uvloop' package"}}
    with pytest.raises(py.UsageError) as e:
        py.plan_models(py.PythonsConfig(models=("go",)), rs)  # the Go reference does not change with Python
    assert "not a Python server model" in str(e.value)


def test_a_variants_pin_replaces_the_default_release_of_that_package():
    v = vr.parse("3.13+UVLoop==0.19.0")
    assert vr.requirements(v, ("uvloop==0.23.0", "trio==0.35.0")) == ["trio==0.35.0", "UVLoop==0.19.0"]
    assert vr.requirement_name("Trio_Foo>=1; python_version<'4'") == "trio-foo"
    # the same packages reached another way (a pin equal to the default) is the same environment
    a, b = (vr.Variant(spec=s, interpreter="3.13", pins=p, python="/usr/bin/python3", version="3.13.0")
            for s, p in (("3.13", ()), ("3.13+uvloop==0.23.0", ("uvloop==0.23.0",))))
    assert vr.cache_key(a, ("uvloop==0.23.0",)) == vr.cache_key(b, ("uvloop==0.23.0",))
    assert vr.cache_key(a, ("uvloop==0.23.0",)) != vr.cache_key(a, ("uvloop==0.21.0",))


@pytest.mark.parametrize("argv, fragment", [
    (["--variants", "3.13+uvloop"], "pin a version of uvloop"),
    (["--variants", "3.13 ruby"], "the interpreter is a version"),
    (["--n1", "900", "--n2", "300"], "--n2 must be larger"),
    (["--rounds", "0"], "at least 1"),
    (["--only", "both"], "invalid choice"),
])
def test_bad_options_are_one_line_and_exit_2(argv, fragment, capsys):
    with pytest.raises(SystemExit) as e:
        py.parse_config(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and fragment in err and err.count("\n") == 1


def test_variants_may_be_separated_by_spaces_or_commas():
    cfg = py.parse_config(["--variants", "3.12, 3.13+uvloop==0.19.0 current", "--only", "cost"])
    assert cfg.variants == ("3.12", "3.13+uvloop==0.19.0", "current") and cfg.cost and not cfg.wall


def _wall_variant(us, vs=None, pairs=None, split=(1.0, 4.0)):
    return {"status": "ok", "failures": [], "client_bound_trials": 0,
            "median": {"server_us_per_msg": us, "msgs_per_s": 100000.0, "p99_us": 150.0},
            "ci": {"server_us_per_msg": {"median": us, "ci": [us * 0.99, us * 1.01]}},
            "split": {"user_us_per_msg": split[0], "kernel_us_per_msg": split[1]},
            "vs_reference": {"server_ns_per_msg": vs} if vs else {}, "pairs": {"server_ns_per_msg": pairs or {}}}


def doc():
    """Three variants, two models: on asyncio-protocol 3.12 is told apart as cheapest, on selectors nothing is."""
    ref = "py3.13.0"
    return {
        "timestamp": "2026-12-06T05:00:00+00:00", "elapsed_s": 600.0, "reference": ref,
        "env": {"git_commit": "abc", "cpu_model": "cpu", "kernel": "6", "python_build": {"implementation": "CPython",
                                                                                          "version": "3.11.7"}},
        "config": {"rounds": 10, "slice_s": 0.3, "instances": 2, "conns": 10, "size": 1024, "n1": 500, "n2": 1500,
                   "repeats": 2},
        "variants": [{"key": k, "spec": k, "interpreter": f"/x/{k}", "ref": None, "commit": None,
                      "build": {"implementation": "CPython", "version": k[2:], "compiler": "GCC 12",
                                "optimizations": k == ref, "lto": False, "debug": False},
                      "packages": {"uvloop": "0.23.0"}} for k in ("py3.11.7", "py3.12.1", ref)],
        "left_out": {"3.14": "variant '3.14': no Python 3.14 here"}, "not_run": {},
        "models": ["asyncio-protocol", "selectors"],
        "cost": {"asyncio-protocol": {
            "reference": ref, "variants": {
                "py3.11.7": {"instructions_per_msg": 23000.0, "runs": [23000.0], "spread": 0.0, "ratio": 23 / 25},
                "py3.12.1": {"instructions_per_msg": 27500.0, "runs": [27500.0], "spread": 0.0002, "ratio": 1.1},
                ref: {"instructions_per_msg": 25000.0, "runs": [25000.0], "spread": 0.0, "ratio": 1.0}},
            "moved": {"variant": "py3.12.1", "ratio": 1.1, "functions": [
                {"function": "_PyEval_EvalFrameDefault'2", "base": 9000.0, "head": 11000.0, "delta": 2000.0}]}},
            "selectors": {"reference": ref, "variants": {
                k: {"instructions_per_msg": 13500.0, "runs": [13500.0], "spread": 0.0, "ratio": 1.0}
                for k in ("py3.11.7", "py3.12.1", ref)}, "moved": {"variant": "py3.11.7", "ratio": 1.0, "functions": []}}},
        "wall": {"client_cpus": [1], "server_cpus": [0], "models": {
            "asyncio-protocol": {"reference": ref, "variants": {
                ref: _wall_variant(6.0),
                "py3.12.1": _wall_variant(5.7, {"median": 0.95, "ci": [0.94, 0.96]},
                                          {"py3.11.7": [0.97, 0.95, 0.99]}),
                "py3.11.7": _wall_variant(5.9, {"median": 0.98, "ci": [0.97, 0.995]})}},
            "selectors": {"reference": ref, "variants": {
                ref: _wall_variant(5.8),
                "py3.12.1": _wall_variant(5.8, {"median": 0.995, "ci": [0.98, 1.01]}, {ref: [0.995, 0.98, 1.01]}),
                "py3.11.7": _wall_variant(5.9, {"median": 1.01, "ci": [0.99, 1.02]})}}}},
    }


def test_the_answer_names_the_cheapest_variant_only_when_its_interval_says_so():
    d = doc()
    a = rep.answer(d, "asyncio-protocol")
    assert "lowest on `py3.12.1`: 0.950 [0.940, 0.960] of `py3.13.0`'s" in a
    assert "0.970 [0.950, 0.990] of the next, `py3.11.7`" in a and "(tied)" not in a
    assert "fewest on `py3.11.7` (23,000), most on `py3.12.1` (27,500, +19.6%)" in a
    s = rep.answer(d, "selectors")
    assert "no variant told apart from `py3.13.0`" in s and "lowest on" not in s
    assert "the same on every variant (13,500.0)" in s


def test_the_report_has_every_variant_across_every_model_down_and_where_the_instructions_moved():
    md = rep.markdown(doc())
    for k in ("`py3.11.7`", "`py3.12.1`", "`py3.13.0` (reference)"):
        assert k in md
    assert "CPython 3.13.0, GCC 12, PGO" in md and "no PGO/LTO" in md  # the build, from the interpreter
    assert "uvloop 0.23.0" in md and "`3.14` (variant '3.14': no Python 3.14 here)" in md
    assert "| asyncio-protocol | 0.980 [0.970, 0.995] | 0.950 [0.940, 0.960] | **6.00 us** |" in md
    assert "| asyncio-protocol | 23,000 (0.920x) | 27,500 (1.100x) | 25,000 | 0.020% |" in md
    assert "1.00 + 4.00" in md
    assert "## Where the instructions moved: asyncio-protocol, `py3.12.1` vs `py3.13.0` (1.100x)" in md
    assert "| `_PyEval_EvalFrameDefault'2` | 9,000.0 | 11,000.0 | +2,000.0 |" in md


def test_the_figure_is_drawn(tmp_path):
    assert rep.plot(doc(), tmp_path) == "pythons.png"
    assert (tmp_path / "pythons.png").stat().st_size > 10_000


def test_the_document_is_refused_when_it_is_another_kind(tmp_path):
    (tmp_path / "pythons.json").write_text(json.dumps({"kind": "echobench-ab", "schema_version": 1}))
    with pytest.raises(ValueError) as e:
        py.load_pythons(str(tmp_path))
    assert "not an echobench pythons document" in str(e.value)
