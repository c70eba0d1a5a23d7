"""Open-loop load profiles end to end (loadgen/run.py --profile, loadgen/profile.py): real servers, real sockets.
What is asserted comes from counts (the schedule's, the echoes'), never from how fast anything ran; the parser and
the schedule's arithmetic: tests/unit/test_profile.py."""

from __future__ import annotations

import pytest
from test_loadgen import loadgen

from loadgen import profile as pf
from loadgen import stats
from loadgen.engine import native

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("engine", ["python", "native"])
def test_a_profile_sends_what_its_schedule_says_and_the_interval_histograms_merge_back_exactly(tmp_path, engine):
    if engine == "native" and native.UNAVAILABLE is not None:
        pytest.skip(native.UNAVAILABLE)
    text = "hold:1000:0.5s,spike:3000:0.3s,ramp:3000-500:0.4s"
    schedule = pf.parse(text)
    out, doc = loadgen(tmp_path, "--server", "asyncio-protocol", "--conns", "5", "--profile", text, "--quiet",
                       engine=engine)
    assert out.returncode == 0, out.stderr
    res, cfg = doc["result"], doc["config"]
    assert cfg["profile"] == schedule.canonical() and cfg["duration"] == pytest.approx(1.2) and cfg["warmup"] == 0
    assert res["engine"]["name"] == engine and res["engine"]["note"] is None
    tl = res["timeline"]
    # the schedule: every interval's due count comes from it, and together they are the profile's whole count
    assert sum(e["due"] for e in tl) == schedule.total == 500 + 900 + 700
    assert res["messages_total"] <= schedule.total  # nothing is sent that the schedule did not make due
    assert sum(e["messages"] for e in tl) == res["messages"]
    assert {e["phase"] for e in tl} == {"hold", "spike", "ramp"} and tl[0]["span_s"] < 0.2  # 100 ms intervals
    # each interval's own histogram, merged, is the whole run's, bucket for bucket
    merged = stats.merge([e["histogram"] for e in tl if e["histogram"]])
    assert merged.get_total_count() == res["messages"] and stats.encode(merged) == res["histogram"]
    assert res["recovery"] is not None and len(res["recovery"]) == 1  # one spike, one entry
    assert all(e["server_rss_mb"] for e in tl) and any(e["server_cpu_pct"] for e in tl)


def test_a_paced_server_falls_behind_in_a_spike_beyond_its_capacity_and_catches_up_after(tmp_path, fault_server):
    """The paced server echoes at most 2,000 messages a second. A spike offering 4,000/s for 0.6 s leaves at least
    the difference undone by the spike's end (physics: the count cannot pass 2,000/s); offered 500/s after it,
    the server has 1,500/s to spare, so the backlog drains in about a second, and the run lasts 3 more."""
    s = fault_server("paced", "--rate", "2000")
    text = "hold:500:0.6s,spike:4000:0.6s,hold:500:3s"
    out, doc = loadgen(tmp_path, "--port", str(s.port), "--server-pid", str(s.proc.pid), "--conns", "10", "--profile", text, "--slo", "p99=20ms",
                       "--quiet")
    assert out.returncode == 0, out.stderr
    (rec,) = doc["result"]["recovery"]
    assert rec["due"] == 2400 and rec["start_s"] == pytest.approx(0.6) and rec["end_s"] == pytest.approx(1.2)
    # the server's pace, whatever the host's load: no more than 2,000 a second over the intervals counted as the
    # spike's (those whose middle lies in it; their spans, not the spike's 0.6 s, since a late tick stretches one)
    during = [e for e in doc["result"]["timeline"] if 0.6 <= e["t_s"] - e["span_s"] / 2 < 1.2]
    assert rec["echoed_during"] == sum(e["messages"] for e in during)
    assert rec["echoed_during"] <= 2000 * sum(e["span_s"] for e in during) * 1.01 + 20
    assert rec["fell_behind"] and rec["peak_backlog"] >= 0.1 * rec["due"]
    assert rec["p99_limit_us"] == 20000 and rec["limit_from"] == "slo"
    assert rec["caught_up_at_s"] is not None and rec["caught_up_at_s"] > rec["end_s"]
    assert rec["peak_p99_us"] is not None and rec["peak_rss_mb"] is not None
    assert "recovery from the spike at 0.6-1.2 s" in out.stdout and "caught up at" in out.stdout


def test_profile_options_that_clash_or_do_not_parse_are_one_line(tmp_path):
    for args, fragment in ((["--profile", "hold:1k:1s", "--duration", "5"], "drop --duration"),
                           (["--profile", "hold:2x:1s"], "give --rate"),
                           (["--profile", "hold:1k:1s,spike:2k:1s@0.5s"], "phases overlap"),
                           (["--profile", "hold:1k:1s", "--find-capacity", "--slo", "p99=1ms"], "drop --find-capacity")):
        out, doc = loadgen(tmp_path, "--server", "asyncio-protocol", *args)
        assert out.returncode == 2 and doc is None, out.stderr
        lines = [x for x in out.stderr.strip().splitlines() if x]
        assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in out.stderr, out.stderr
