"""make bench-overload's pure parts (loadgen/suite/overload.py): the profile it builds, the summary that names the
fastest recovery and the largest memory growth, the table, the options. The runs: tests/test_overload.py."""

from __future__ import annotations

import pytest

from loadgen import profile as pf
from loadgen.suite import overload as ov


def test_the_profile_holds_spikes_and_recovers_in_multiples_of_the_capacity():
    cfg = ov.OverloadConfig(spikes=(2.0, 4.0), base=0.5, hold_s=3, spike_s=2, recover_s=5)
    text = ov.profile_text(cfg)
    assert text == "hold:0.5x:3s,spike:2x:2s,hold:0.5x:5s,spike:4x:2s,hold:0.5x:5s"
    p = pf.parse(text, base=10000)
    assert [(x.kind, x.rate_from) for x in p.phases] == [("hold", 5000), ("spike", 20000), ("hold", 5000),
                                                         ("spike", 40000), ("hold", 5000)]
    assert p.duration_s == 17 and p.total == 15000 + 40000 + 25000 + 80000 + 25000


def _entry(model, recover, growth, p99=5000.0):
    spike = {"times_capacity": 2.0, "recover_s": recover, "p99_limit_us": 1000.0, "peak_p99_us": p99,
             "peak_backlog": 1234, "fell_behind": recover is None}
    return {"model": model, "capacity": {"msgs_per_s": 50000.0}, "spikes": [spike, {**spike, "times_capacity": 4.0}],
            "rss_start_mb": 20.0, "rss_peak_mb": 20.0 + growth, "rss_end_mb": 20.0 + growth / 2,
            "errors": {}, "engine": "native", "loadgen_pct": 40.0, "verdict": "server-bound"}


def test_the_summary_names_the_fastest_recovery_and_the_largest_growth_with_figures():
    entries = [_entry("a", 0.8, 1.0), _entry("b", 0.3, 2.5), _entry("c", None, 40.0),
               {"model": "d", "error": "no capacity at p99=1ms was found"}]
    lines = ov.summary(entries)
    assert lines[0].startswith("**Fastest to recover** from the 2x spike: `b`, p99 back under 1.0 ms 0.3 s after the spike ended")
    assert "Not recovered before the run ended: `c`." in lines
    assert "**Memory grows most** in `c`: 20.0 -> 60.0 MiB (+40.0), 40.0 MiB at the end." in lines
    doc = {"timestamp": "t", "elapsed_s": 300.0, "models": ["a", "b", "c", "d"], "entries": entries,
           "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(ov.OverloadConfig()).items()}}
    md = ov.markdown(doc)
    assert "| b | 50,000 | 5.0 ms / 1,234 / 0.3 s | 5.0 ms / 1,234 / 0.3 s | 20.0 -> 22.5 -> 21.2 | 0 | native, 40% |" in md
    assert "| d | no capacity at p99=1ms was found |" in md and "[c](timelines/c.png)" in md
    assert ov.summary([]) == ["No model was measured."]
    tie = ov.summary([_entry("a", 0.1, 1.0, p99=2000.0), _entry("b", 0.1, 1.0), _entry("c", 0.4, 1.0)])
    assert tie[0] == ("**Fastest to recover** from the 2x spike, tied at 0.1 s after it ended (p99 back under 1.0 ms): "
                      "`a` (peak p99 2.0 ms), `b` (peak p99 5.0 ms).")
    # a profile run beside other processes is said first (loadgen/hostload.py)
    busy = ov.summary([{**_entry("a", 0.8, 1.0), "host": {"worst_share": 0.31}},
                       {**_entry("b", 0.3, 1.0), "host": {"worst_share": 0.01}}])
    assert busy[0].startswith("**Disturbed**: other processes took the run's CPUs during the profile of `a` (31%)")
    assert "`b`" not in busy[0] and busy[1].startswith("**Fastest to recover**")


@pytest.mark.parametrize("argv, fragment", [(["--spikes", "2,x"], "multiples of the capacity"),
                                            (["--slo", "p50=1ms"], "judged on p99"),
                                            (["--slo", "fast"], "invalid SLO"), (["--base", "1.5"], "between 0 and 1"),
                                            (["--hold", "0"], "seconds between 0 and 600")])
def test_bad_options_are_one_line_and_exit_2(argv, fragment, capsys):
    with pytest.raises(SystemExit) as e:
        ov.parse_config(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and fragment in err and err.count("\n") == 1


def test_a_matrix_overload_table_gives_the_commands_config_and_refuses_bad_keys_in_one_line():
    assert ov.config_from_table({}) == ov.OverloadConfig()
    cfg = ov.config_from_table({"spikes": [2, 3.5], "hold": 1, "step": 0.4, "max_steps": 3, "models": ["selectors"]},
                               models=("selectors",))
    assert cfg.spikes == (2.0, 3.5) and cfg.hold_s == 1 and cfg.step_s == 0.4 and cfg.max_steps == 3
    assert cfg.models == ("selectors",)
    for table, fragment in (({"rate": 1}, "unknown key(s) rate"), ({"spikes": []}, "multiples"),
                            ({"spikes": [2, True]}, "multiples"), ({"conns": 0}, "connection count"),
                            ({"base": 1}, "between 0 and 1"), ({"slo": "p99=fast"}, "judged on p99"),
                            ({"slo": "p50=1ms"}, "judged on p99"), ({"recover": 0}, "seconds"),
                            ({"precision": 1}, "precision"), ({"max_steps": 0}, "step count")):
        with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as exc:
            ov.config_from_table(table)
        assert "\n" not in str(exc.value)
