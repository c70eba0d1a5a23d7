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
