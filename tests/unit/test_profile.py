"""Open-loop load profiles (loadgen/profile.py): the parser, and the schedule it makes, counted exactly from the
schedule (never from timing)."""

from __future__ import annotations

import math

import pytest

from loadgen import profile as pf


def test_the_issues_example_parses_into_its_phases():
    p = pf.parse("ramp:0-60k:10s,hold:60k:20s,spike:150k:5s,hold:30k:20s")
    assert [(x.kind, x.start_s, x.duration_s, x.rate_from, x.rate_to) for x in p.phases] == [
        ("ramp", 0.0, 10.0, 0.0, 60000.0), ("hold", 10.0, 20.0, 60000.0, 60000.0),
        ("spike", 30.0, 5.0, 150000.0, 150000.0), ("hold", 35.0, 20.0, 30000.0, 30000.0)]
    assert p.duration_s == 55.0 and p.peak_rate == 150000.0
    # exact counts per phase: the ramp's area is 10 s x 60k / 2
    assert p.per_phase() == [300000, 1200000, 750000, 600000] and p.total == 2850000
    assert p.rate_at(5.0) == 30000.0 and p.rate_at(32.0) == 150000.0


def test_multiples_of_the_base_rate_units_and_a_pause_left_by_a_start():
    p = pf.parse("hold:0.5x:10s, spike:2x:500ms, hold:0.5x:1m@20s", base=40000)
    assert [(x.kind, x.rate_from) for x in p.phases] == [("hold", 20000), ("spike", 80000), ("pause", 0.0),
                                                         ("hold", 20000)]
    assert p.phases[2].start_s == 10.5 and p.phases[2].duration_s == 9.5 and p.phases[3].start_s == 20.0
    assert p.per_phase() == [200000, 40000, 0, 1200000]
    assert pf.parse("hold:1.5M:1s").total == 1500000 and pf.parse("hold:2k:1s").total == 2000


@pytest.mark.parametrize("text, fragment", [
    ("", "an empty profile"),
    ("hold:10k", "expected KIND:RATE:DURATION"),
    ("burst:10k:5s", "KIND one of hold, ramp, spike"),
    ("hold:10k:5", "'5' is not a duration"),
    ("hold:ten:5s", "'ten' is not a rate"),
    ("ramp:10k:5s", "a ramp goes FROM-TO"),
    ("hold:2x:5s", "give --rate"),
    ("hold:10k:0s", "must be positive"),
    ("hold:10k:5s,,hold:1k:1s", "phase 2 is empty"),
    ("hold:10k:10s,spike:40k:5s@8s", "phase 2 ('spike:40k:5s@8s') starts at 8s, before phase 1 (hold) ends at 10s: "
                                     "phases overlap"),
    ("hold:0:5s", "offers no message"),
    ("hold:1k:2h", "not a duration"),
    ("hold:1k:61m", "at most 3600 s"),
    ("hold:1k:1s@x", "@START"),
])
def test_bad_profiles_are_one_line(text, fragment):
    with pytest.raises(pf.ProfileError) as e:
        pf.parse(text)
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["hold:1000:1s", "ramp:0-1000:2s", "ramp:3000-500:1s,hold:0:1s,spike:4000:250ms",
                                  "ramp:10-20:1s,ramp:20-0:1s"])
def test_each_message_is_due_where_the_count_reaches_it(text):
    p = pf.parse(text)
    times = [p.time_of(n) for n in range(p.total)]
    assert p.time_of(p.total) is None and p.time_of(-1) is None
    assert times == sorted(times) and times[0] >= 0 and times[-1] < p.duration_s
    for n, t in enumerate(times):  # T is N's inverse
        assert math.isclose(p.count(t), n, abs_tol=1e-6)
    # the count per phase from the schedule equals the messages whose due time falls in the phase
    for ph, due in zip(p.phases, p.per_phase()):
        assert due == sum(ph.start_s <= t < ph.end_s for t in times) or ph.duration_s == 0


def test_a_hold_spaces_messages_evenly_and_connections_interleave():
    p = pf.parse("hold:1000:1s")
    assert [round(p.time_of(n), 9) for n in range(4)] == [0.0, 0.001, 0.002, 0.003]
    conns = 4  # connection c sends messages c, c + 4, ...: each at 250/s, a quarter interval apart
    first = [p.time_of(c) for c in range(conns)]
    second = [p.time_of(c + conns) for c in range(conns)]
    assert [round(b - a, 9) for a, b in zip(first, second)] == [0.004] * conns


def test_the_canonical_text_parses_back_to_the_same_schedule_without_a_base():
    p = pf.parse("hold:0.5x:10s,spike:3x:250ms,ramp:1.5M-1x:1s@20s", base=33333.5)
    text = p.canonical()
    assert "x" not in text and "e+" not in text
    q = pf.parse(text)
    same = [{**x.as_dict(), "kind": "hold" if x.kind == "pause" else x.kind} for x in p.phases]  # a pause: hold:0
    assert [x.as_dict() for x in q.phases] == same and q.per_phase() == p.per_phase()


def _tl(profile, echoed, p99, span=0.1):
    """A synthetic timeline: each interval's due count from the schedule, its echoes and p99 as given."""
    out = []
    for i, (n, p) in enumerate(zip(echoed, p99)):
        t = round((i + 1) * span, 6)
        out.append({"t_s": t, "span_s": span, "due": profile.due_in(t - span, t), "messages": n, "p99_us": p,
                    "p999_us": p * 2, "errors": 0, "server_rss_mb": 20.0 + (5 if 10 <= i < 14 else 0)})
    return out


def test_recovery_is_read_from_counts_the_backlog_and_the_calm_intervals_after_the_spike():
    p = pf.parse("hold:1000:1s,spike:4000:0.5s,hold:1000:1.5s")  # 100, then 400, then 100 due per 0.1 s
    # a server of 2,000/s: keeps up before, 200 per interval in the spike (backlog +200 each), then 200 per interval
    # until the backlog of 1,000 is gone (+100 net per interval: 10 intervals), then 100
    echoed = [100] * 10 + [200] * 5 + [200] * 10 + [100] * 5
    p99 = [100.0] * 10 + [5000.0] * 5 + [3000.0] * 10 + [120.0] * 5
    (r,) = pf.recovery(_tl(p, echoed, p99), p)
    assert r["due"] == 2000 and r["echoed_during"] == 1000 and r["peak_backlog"] == 1000 and r["fell_behind"]
    assert r["caught_up_at_s"] == 2.5 and r["p99_before_us"] == 100.0 and r["p99_limit_us"] == 200.0
    assert r["recovered_at_s"] == 2.6 and r["recover_s"] == 1.1  # the first of three calm intervals in a row
    assert r["peak_p99_us"] == 5000.0 and r["peak_p999_us"] == 10000.0
    assert r["rss_before_mb"] == 20.0 and r["peak_rss_mb"] == 25.0
    # judged against an SLO instead: the 3 ms intervals pass it, the backlog still has to go
    (s,) = pf.recovery(_tl(p, echoed, p99), p, slo_p99_us=4000.0)
    assert s["p99_limit_us"] == 4000.0 and s["recovered_at_s"] == 2.5 and s["limit_from"] == "slo"
    # a server that keeps up: no backlog beyond what was in flight, recovered as soon as the spike ends
    keeps = [100] * 10 + [400] * 5 + [100] * 15
    (k,) = pf.recovery(_tl(p, keeps, [100.0] * 30), p)
    assert not k["fell_behind"] and k["peak_backlog"] == 0 and k["recover_s"] == 0.1
    # one that never catches up before the run ends
    (n,) = pf.recovery(_tl(p, [100] * 10 + [100] * 20, [100.0] * 10 + [9000.0] * 20), p)
    assert n["fell_behind"] and n["caught_up_at_s"] is None and n["recovered_at_s"] is None and n["recover_s"] is None
    assert pf.recovery(_tl(p, keeps, [100.0] * 30), pf.parse("hold:1000:3s")) == []  # no spike, nothing to say
