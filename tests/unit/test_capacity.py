"""The capacity search's core (loadgen/modes/capacity.py) on synthetic servers whose capacity is known: no sockets,
no timing, every outcome exact."""

from __future__ import annotations

import pytest

from loadgen import capacity as cap


def server(capacity: float, base_us: float = 50.0, client_max: float | None = None, client_bound_above: float | None = None):
    """A model server: latency stays at base below ``capacity`` and explodes above it (queues build); a client
    that cannot send more than ``client_max`` msgs/s achieves only that."""
    calls = []

    def measure(rate: float) -> cap.Step:
        calls.append(rate)
        achieved = rate if client_max is None else min(rate, client_max)
        load = rate / capacity
        p99 = base_us if load <= 1 else base_us * 1000 * load
        verdict = "client-bound" if client_bound_above is not None and rate > client_bound_above else None
        return cap.Step(rate=rate, achieved=achieved, latency_us={"p50": base_us, "p99": p99, "p999": p99 * 2},
                        verdict=verdict)

    measure.calls = calls
    return measure


@pytest.mark.parametrize("text, key, limit", [
    ("p99=1ms", "p99", 1000.0), ("p99.9=500us", "p999", 500.0), ("p50=0.2ms", "p50", 200.0), ("max=1s", "max", 1e6),
])
def test_parse_slo(text, key, limit):
    s = cap.parse_slo(text)
    assert (s.percentile, s.limit_us) == (key, limit)


@pytest.mark.parametrize("text", ["p98=1ms", "p99", "p99=1", "p99=-1ms", "p99=0ms", "latency<1ms"])
def test_bad_slo_is_refused(text):
    with pytest.raises(ValueError, match="SLO"):
        cap.parse_slo(text)


@pytest.mark.parametrize("true_capacity", [3_000, 17_500, 123_456])
def test_the_search_finds_a_known_capacity_within_its_precision(true_capacity):
    m = server(true_capacity)
    r = cap.search(m, [cap.parse_slo("p99=1ms")], start_rate=1000, precision=0.05)
    assert r.complete and r.stopped is None
    lo, hi = r.bracket
    assert lo <= true_capacity < hi and hi / lo - 1 <= 0.05
    assert r.capacity_msgs_per_s == lo and true_capacity * (1 - 0.05) <= lo
    assert len(r.steps) <= 20 and {s.phase for s in r.steps} <= {"ramp", "bisect"}


def test_when_the_start_rate_already_breaks_it_comes_down():
    m = server(400)
    r = cap.search(m, [cap.parse_slo("p99=1ms")], start_rate=10_000, precision=0.05)
    assert r.complete and r.bracket[0] <= 400 < r.bracket[1]
    assert any(s.phase == "descend" for s in r.steps)
    # once a rate held, the lowest broken one ran again (once) and broke again: the bisection trusts it
    (again,) = [s for s in r.steps if s.phase == "recheck"]
    assert again.rate == 625 and not again.meets and m.calls.count(625) == 2


def test_a_first_step_broken_by_a_server_still_starting_does_not_cap_the_search():
    """The first step breaks although the rate is far below the capacity (a server still starting its threads):
    once a lower rate holds, the broken rate runs again, holds, and the search ramps on to the real capacity."""
    real = server(20_000)

    def measure(rate):
        step = real(rate)
        if len(real.calls) == 1:  # the first step only
            step.latency_us = {"p50": 5_000, "p99": 50_000, "p999": 90_000}
        return step

    r = cap.search(measure, [cap.parse_slo("p99=1ms")], start_rate=2_000, precision=0.05)
    assert [s.phase for s in r.steps[:3]] == ["ramp", "descend", "recheck"] and r.steps[2].rate == 2_000
    assert r.steps[2].meets and r.steps[3].phase == "ramp" and r.steps[3].rate == 4_000
    assert r.complete and r.bracket[0] <= 20_000 < r.bracket[1] and r.bracket[1] / r.bracket[0] - 1 <= 0.05


def test_every_slo_must_hold():
    slos = [cap.parse_slo("p99=1ms"), cap.parse_slo("p50=10us")]  # p50 is 50 us at every rate: never holds
    r = cap.search(server(5_000), slos, start_rate=1000, max_steps=12)
    assert r.capacity_msgs_per_s is None and not r.complete and "no rate" in r.stopped


def test_a_client_that_cannot_offer_the_rate_ends_with_that_answer_not_a_capacity():
    r = cap.search(server(1e9, client_max=20_000), [cap.parse_slo("p99=1ms")], start_rate=1000)
    assert not r.complete and "client cannot offer this rate" in r.stopped and "at least" in r.stopped
    # below the first rate it could not offer (32,000) the search bisects to the client's own limit; what held
    # there is a lower bound on the capacity, said so, never a capacity
    found = r.capacity_msgs_per_s  # a synthetic client: exact arithmetic, no clock
    assert 20_000 * 0.95 <= found <= 20_000 and r.bracket[1] is None
    assert any(s.valid is False and s.meets is None for s in r.steps)


def test_a_valid_break_below_the_clients_limit_still_finds_the_capacity():
    m = server(18_000, client_bound_above=19_000)
    r = cap.search(m, [cap.parse_slo("p99=1ms")], start_rate=10_000, precision=0.05)
    assert r.complete and r.stopped is None
    lo, hi = r.bracket
    assert lo <= 18_000 < hi and hi / lo - 1 <= 0.05
    assert not r.steps[1].valid and "client cannot offer" in r.steps[1].reason  # 20,000: the ceiling


def test_an_invalid_step_that_is_not_the_clients_limit_ends_the_search():
    def measure(rate):
        return cap.Step(rate=rate, achieved=rate, latency_us={"p99": 10.0}, failures=1 if rate > 3000 else 0)

    r = cap.search(measure, [cap.parse_slo("p99=1ms")], start_rate=1000)
    assert [s.rate for s in r.steps] == [1000, 2000, 4000] and "integrity" in r.stopped and not r.complete


@pytest.mark.parametrize("field, value, why", [
    ("verdict", "client-bound", "bottleneck"), ("verdict", "both-saturated", "bottleneck"),
    ("failures", 3, "integrity"), ("complete", False, "did not complete"),
])
def test_invalid_steps_say_why(field, value, why):
    step = cap.Step(rate=1000, achieved=1000, latency_us={"p99": 10.0})
    setattr(step, field, value)
    cap.judge(step, [cap.parse_slo("p99=1ms")])
    assert not step.valid and why in step.reason and step.meets is None


def test_a_step_that_could_not_run_is_invalid_and_ends_the_search():
    step = cap.Step(rate=1000, achieved=0.0, latency_us={}, complete=False, verdict="error: server died at start")
    cap.judge(step, [cap.parse_slo("p99=1ms")])
    assert not step.valid and "could not be made" in step.reason and "server died" in step.reason


def test_the_search_is_bounded():
    m = server(1e12)
    r = cap.search(m, [cap.parse_slo("p99=1ms")], start_rate=1, max_steps=7)
    assert len(m.calls) == 7 and not r.complete and "max_steps" in r.stopped
    r = cap.search(server(1e12), [cap.parse_slo("p99=1ms")], start_rate=1000, max_rate=50_000)
    assert r.complete and r.capacity_msgs_per_s == 50_000 and "still holds" in r.stopped


def test_bad_search_arguments():
    with pytest.raises(ValueError):
        cap.search(server(1), [], start_rate=1)
    with pytest.raises(ValueError):
        cap.search(server(1), [cap.parse_slo("p99=1ms")], start_rate=0)


def test_a_server_that_falls_behind_is_an_overload_not_an_invalid_step():
    # depth-limited open loop: past its capacity the server holds the client's window full, so fewer messages go
    # out than planned, and the corrected latency explodes: a valid step that breaks the SLO
    step = cap.Step(rate=256_000, achieved=242_000, latency_us={"p99": 70_000.0}, verdict="server-bound")
    cap.judge(step, [cap.parse_slo("p99=1ms")])
    assert step.valid and step.meets is False and step.overload


# -- who fell behind: the client's own timers, or the server -----------------------------------------------------

def test_a_client_whose_timers_ran_late_cannot_offer_the_rate():
    step = cap.Step(rate=100_000, achieved=90_000, latency_us={"p99": 500.0}, verdict="neither", send_lag_p50_us=8_000.0)
    cap.judge(step, [cap.parse_slo("p99=1ms")])
    assert not step.valid and "client cannot offer this rate" in step.reason and "late" in step.reason


def test_a_server_that_falls_behind_breaks_the_slo_even_where_its_percentiles_held():
    # the client had headroom (its CPU measured, its timers on time), yet fewer echoes came back than planned: the
    # server cannot sustain the rate, so it is not within its capacity whatever the percentiles say
    step = cap.Step(rate=100_000, achieved=95_000, latency_us={"p99": 800.0}, verdict="server-bound", send_lag_p50_us=20.0,
                    loadgen_wait_pct=0.3)
    cap.judge(step, [cap.parse_slo("p99=1ms")])
    assert step.valid and step.meets is False and step.overload and "server fell behind" in step.note


@pytest.mark.parametrize("lag, wait", [(None, None), (20.0, None)])
def test_without_evidence_of_client_headroom_a_short_step_is_the_clients(lag, wait):
    # the client's run-queue wait unknown, or no timer ever fired: a full window and a late client look alike
    step = cap.Step(rate=100_000, achieved=95_000, latency_us={"p99": 800.0}, verdict="server-bound", send_lag_p50_us=lag,
                    loadgen_wait_pct=wait)
    cap.judge(step, [cap.parse_slo("p99=1ms")])
    assert not step.valid and step.reason.startswith("client cannot offer this rate")


def test_a_client_starved_of_its_cpu_cannot_offer_the_rate():
    step = cap.Step(rate=1000, achieved=1000, latency_us={"p99": 800.0}, verdict="neither", loadgen_wait_pct=35.0)
    cap.judge(step, [cap.parse_slo("p99=1ms")])
    assert not step.valid and "waited for its CPU 35%" in step.reason


def test_a_saturated_client_is_a_client_that_cannot_offer_the_rate():
    step = cap.Step(rate=5e6, achieved=2e5, latency_us={"p99": 800.0}, verdict="both-saturated")
    cap.judge(step, [cap.parse_slo("p99=1ms")])
    assert not step.valid and step.reason.startswith("client cannot offer this rate")


@pytest.mark.parametrize("text, want", [
    ("1000,5k,20k", [(1000.0, False), (5000.0, False), (20000.0, False)]),
    ("0.25x, 0.5x,1x", [(0.25, True), (0.5, True), (1.0, True)]),
    ("2k,1.1x", [(2000.0, False), (1.1, True)]),
])
def test_parse_sweep(text, want):
    assert cap.parse_sweep(text) == want


@pytest.mark.parametrize("text", ["", "abc", "0", "-5", "0x", "1000,,2000", "nanx", ",".join(["1000"] * 51)])
def test_bad_sweep_is_refused(text):
    with pytest.raises(ValueError, match="sweep"):
        cap.parse_sweep(text)


def test_confirm_runs_the_capacity_again_and_it_must_hold_twice():
    m = server(10_000)
    r = cap.search(m, [cap.parse_slo("p99=1ms")], start_rate=1000, precision=0.05, confirm=True)
    assert r.complete and r.confirmed is True and r.steps[-1].phase == "confirm"
    assert m.calls[-1] == r.capacity_msgs_per_s and m.calls.count(r.capacity_msgs_per_s) == 2


def test_a_capacity_that_breaks_when_confirmed_is_not_reported():
    base = server(10_000)
    seen: dict[float, int] = {}

    def flaky(rate):  # a lucky first run: the rate that held first breaks on its second run (a stall)
        seen[rate] = seen.get(rate, 0) + 1
        step = base(rate)
        if seen[rate] == 2 and len(seen) > 3 and rate == max(r for r in seen if r <= 10_000):
            step.latency_us = {"p99": 50_000.0}
        return step

    r = cap.search(flaky, [cap.parse_slo("p99=1ms")], start_rate=1000, precision=0.05, confirm=True, max_steps=20)
    first_confirm = next(s for s in r.steps if s.phase == "confirm")
    assert first_confirm.meets is False  # broke on its second run...
    assert r.capacity_msgs_per_s < first_confirm.rate  # ...so it is not the capacity
    assert r.confirmed is True and r.complete and r.bracket[1] <= first_confirm.rate


# -- issue 32: breaks confirmed, the host's breaks told apart, the floor apart ------------------------------------

def busy_server(capacity: float, base_us: float = 50.0, tail=None, lag_us: float = 20.0):
    """As :func:`server`, with the server's CPU (its share of the capacity) and a host ``tail(rate, n)`` -> an extra
    p99 in us, or a dict of fields to set (``extra_us``, ``host_share``, ``send_lag_p50_us``, ...) for the n-th try at
    that rate: a stall of the host, not the server."""
    calls = []

    def measure(rate: float) -> cap.Step:
        calls.append(rate)
        n = calls.count(rate)
        load = rate / capacity
        p99 = base_us if load <= 1 else base_us * 1000 * load
        extra = tail(rate, n) if tail else 0.0
        fields = dict(extra) if isinstance(extra, dict) else {"extra_us": extra}
        extra_us = fields.pop("extra_us", 0.0)
        step = cap.Step(rate=rate, achieved=rate, latency_us={"p50": base_us, "p99": p99 + extra_us, "max": p99 + extra_us},
                        server_pct=min(100.0, 100 * load), verdict="server-bound", loadgen_wait_pct=0.0,
                        send_lag_p50_us=lag_us)
        for k, v in fields.items():
            setattr(step, k, v)
        return step

    measure.calls = calls
    return measure


SLO = [cap.parse_slo("p99=1ms")]
IDLE, FOREIGN, LAG = cap.HostSign.IDLE_SERVER.value, cap.HostSign.FOREIGN.value, cap.HostSign.CLIENT_LAG.value


def tried(*outcomes: str) -> list[cap.Step]:
    """Judged tries: H held, P broke with no sign of the host, S broke with one."""
    return [cap.Step(rate=1, achieved=1, latency_us={}, meets=o == "H", host_suspect=[IDLE] if o == "S" else [])
            for o in outcomes]


@pytest.mark.parametrize("outcomes, final, want", [
    ("H", False, True),
    ("S", False, None), ("SH", False, True),  # a break with a sign of the host: one try that holds outweighs it
    ("P", False, None), ("PH", False, None), ("PHH", False, True), ("PHP", False, False),  # otherwise 2 of 3
    ("PP", False, False), ("PS", False, False), ("SP", False, False), ("SS", False, False), ("PHS", False, False),
    ("P", True, False), ("S", True, False), ("PH", True, False),  # out of tries: never a hold on a tie
])
def test_a_rates_verdict_from_its_tries(outcomes, final, want):
    assert cap._verdict(tried(*outcomes), final) is want


def test_a_lone_stall_at_a_light_rate_is_retried_and_does_not_cap_the_search():
    """Issue 32: the step at 1,000 msgs/s broke (p99 2.7 ms, the server 10% busy, the client's sends late by 101 us
    at the median); the search came down and settled at 677. Run again it held at 0.27 ms: it counts as holding."""
    tail = lambda rate, n: {"extra_us": 2_650.0, "send_lag_p50_us": 101.0} if (rate, n) == (1_000, 1) else 0.0  # noqa: E731
    m = busy_server(12_000, tail=tail)
    r = cap.search(m, SLO, start_rate=1_000, precision=0.05, confirm_breaks=True)
    assert r.complete and r.bracket[0] <= 12_000 < r.bracket[1] and r.bracket[1] / r.bracket[0] - 1 <= 0.05
    assert r.steps[0].host_suspect == [LAG, IDLE] and r.steps[0].meets is False
    assert [(s.phase, s.rate) for s in r.steps[:3]] == [("ramp", 1_000), ("retry", 1_000), ("ramp", 2_000)]
    assert r.retried[LAG] == 1  # counted by the break's first sign
    # the flaw, without confirmation: the same stall sends the search down (there, the recheck ran into a second
    # stall, and it settled at 677)
    plain = cap.search(busy_server(12_000, tail=tail), SLO, start_rate=1_000, precision=0.05)
    assert (plain.steps[1].phase, plain.steps[1].rate) == ("descend", 500)


def test_a_break_beside_other_processes_is_retried_and_counted_by_that_sign():
    m = busy_server(8_000, tail=lambda rate, n: {"extra_us": 4_000.0, "host_share": 0.3} if (rate, n) == (4_000, 1) else 0.0)
    r = cap.search(m, SLO, start_rate=1_000, precision=0.05, confirm_breaks=True, max_steps=40)
    assert r.retried[FOREIGN] == 1 and r.bracket[0] <= 8_000 < r.bracket[1] and r.complete
    first, again = [s for s in r.steps if s.rate == 4_000]
    assert FOREIGN in first.host_suspect and (first.phase, again.phase) == ("ramp", "retry") and again.meets
    assert r.as_dict()["retried"][FOREIGN] == 1  # what suite.json and result.capacity get


def test_a_real_knee_is_found_and_every_break_is_confirmed_2_of_3():
    # the knee's breaks come with the server busy and the host quiet: each is run again before it counts; the
    # first (the ramp's 8,000 msgs/s) passes on luck on its retry, so a third try decides
    lucky = {}

    def tail(rate, n):
        if rate > 5_000 and not lucky:
            lucky[rate] = True
        return {"latency_us": {"p50": 50.0, "p99": 300.0}} if rate in lucky and n == 2 else 0.0

    m = busy_server(5_000, tail=tail)
    r = cap.search(m, SLO, start_rate=1_000, precision=0.05, confirm_breaks=True, max_steps=40)
    assert r.complete and r.bracket[0] <= 5_000 < r.bracket[1] and r.bracket[1] / r.bracket[0] - 1 <= 0.05
    broken = {s.rate for s in r.steps if s.meets is False}
    assert broken and all(m.calls.count(x) >= 2 for x in broken)  # every break ran at least twice
    (x,) = lucky
    assert m.calls.count(x) == 3 and [s.meets for s in r.steps if s.rate == x] == [False, True, False]
    assert set(r.retried) == {cap.CONFIRM_BREAK} and r.retried[cap.CONFIRM_BREAK] == len(broken) + 1


def test_light_rates_that_always_break_on_an_idle_server_send_the_search_up_not_down():
    """The host's wake-up tail breaks every step below 3,000 msgs/s (the server idles between messages); above, the
    server holds up to its capacity: latency is not monotonic in the rate, and the search must not settle low."""
    m = busy_server(20_000, tail=lambda rate, n: 3_000.0 if rate < 3_000 else 0.0)
    r = cap.search(m, SLO, start_rate=1_000, precision=0.05, confirm_breaks=True, max_steps=30)
    assert r.complete and r.bracket[0] <= 20_000 < r.bracket[1]
    assert [b["rate"] for b in r.host_breaks] == [1_000, 2_000] and all(IDLE in b["host_suspect"] for b in r.host_breaks)
    assert [s.phase for s in r.steps[:5]] == ["ramp", "retry", "past-idle", "retry", "past-idle"]
    assert r.steps[4].rate == 4_000 and r.steps[4].meets
    # a break below a rate that held is never the bracket's top: the top is a break above the bottom
    assert r.bracket[1] > r.bracket[0] >= 4_000 and r.retried[IDLE] == 2


def test_a_break_below_a_rate_that_held_never_becomes_the_top():
    # the host breaks every try at 1,000 msgs/s and below (the floor, 100, and the start); 2,000 and up hold to the
    # server's capacity: those breaks lie below rates that held, and are kept apart, never the bracket's top
    m = busy_server(3_000, tail=lambda rate, n: 3_000.0 if rate <= 1_000 else 0.0)
    r = cap.search(m, SLO, start_rate=1_000, precision=0.05, confirm_breaks=True, floor=True, confirm=True, max_steps=30)
    lo, hi = r.bracket
    assert r.complete and r.confirmed and lo <= 3_000 < hi and hi / lo - 1 <= 0.05
    assert {s.rate for s in r.steps if s.meets is False and s.rate < lo} == {100, 1_000}
    assert [b["rate"] for b in r.host_breaks] == [1_000] and r.floor["meets"] is False and not r.floor["confirmed"]


def test_the_floor_is_measured_at_a_light_load_and_reported_apart():
    m = busy_server(20_000, tail=lambda rate, n: 2_500.0 if (rate, n) == (200, 1) else 0.0)
    r = cap.search(m, SLO, start_rate=2_000, precision=0.05, confirm_breaks=True, floor=True, confirm=True, max_steps=20)
    assert r.steps[0].phase == "floor" and r.floor["rate"] == 200 and r.floor["server_pct"] == 1.0
    # one break at the floor, never needed again: reported as seen, unconfirmed, and the search goes on
    assert r.floor["latency_us"]["p99"] == 2_550.0 and r.floor["meets"] is False and not r.floor["confirmed"]
    assert IDLE in r.floor["host_suspect"] and m.calls.count(200) == 1
    assert r.complete and r.confirmed and r.bracket[0] <= 20_000 < r.bracket[1]  # not the capacity's business
    d = r.as_dict()
    assert d["floor"]["rate"] == 200 and d["floor"]["tries"] == 1 and "retried" in d and d["host_breaks"] == []


def test_a_search_comes_down_to_the_floor_not_past_it():
    # the start is far above the capacity: the search comes down; the floor (1,000 msgs/s) held, so it is the
    # bracket's bottom, and no step runs below it
    m = busy_server(1_100)
    r = cap.search(m, SLO, start_rate=10_000, precision=0.05, confirm_breaks=True, floor=True)
    assert r.complete and r.bracket[0] <= 1_100 < r.bracket[1] and min(m.calls) == 1_000
    assert m.calls.count(1_000) == 1 and "descend" in [s.phase for s in r.steps]


def test_a_floor_above_the_slo_ends_the_search_with_that_answer():
    """The host's latency at any load is above the SLO (2 ms of wake-up tail on every try): the search ends saying
    so, having confirmed the floor's break, rather than coming down to a tiny rate."""
    m = busy_server(20_000, tail=lambda rate, n: 2_000.0)
    r = cap.search(m, SLO, start_rate=1_000, precision=0.05, confirm_breaks=True, floor=True, max_steps=14)
    assert r.stop is cap.Stop.BELOW_FLOOR and r.capacity_msgs_per_s is None and not r.complete
    assert r.floor["meets"] is False and r.floor["confirmed"] and r.floor["broke"] == r.floor["tries"] == 2
    assert "no capacity is measurable here" in r.stopped and "p99 2,050 us" in r.stopped
    assert min(m.calls) == 100 and len(r.steps) <= 14 and r.as_dict()["stop"] is cap.Stop.BELOW_FLOOR
    # a lone stall at the floor, when the search needs its verdict, is retried and does not end it
    m = busy_server(1_100, tail=lambda rate, n: 2_000.0 if (rate, n) == (1_000, 1) else 0.0)
    r = cap.search(m, SLO, start_rate=10_000, precision=0.05, confirm_breaks=True, floor=True)
    assert r.complete and r.bracket[0] <= 1_100 < r.bracket[1] and r.floor["meets"] and r.floor["confirmed"]


@pytest.mark.parametrize("max_steps", range(1, 16))
@pytest.mark.parametrize("tail", [lambda rate, n: 1e6, lambda rate, n: 2_000.0 if n % 2 else 0.0,
                                  lambda rate, n: 3_000.0 if rate < 3_000 else 0.0])
def test_the_search_stays_within_its_steps_and_retries(max_steps, tail):
    m = busy_server(20_000, tail=tail)
    r = cap.search(m, SLO, start_rate=1_000, confirm_breaks=True, floor=True, confirm=True, max_steps=max_steps)
    assert len(r.steps) == len(m.calls) <= max_steps and sum(r.retried.values()) <= max_steps // 2
    assert r.complete or r.stop is not None


def test_retries_are_capped_in_all():
    m = busy_server(5_000)
    r = cap.search(m, SLO, start_rate=1_000, precision=0.05, confirm_breaks=True, max_retries=1, max_steps=40)
    assert sum(r.retried.values()) == 1 and [s.phase for s in r.steps].count("retry") == 1
    assert r.complete and r.bracket[0] <= 5_000 < r.bracket[1]  # beyond the cap a break counts on one try


def test_the_report_gives_the_bracket_the_retries_and_the_floor_apart():
    import json

    from loadgen.suite.report import capacity_text, floor_text, summary_lines

    def entry(m, start):  # as bench.py writes it into suite.json
        r = cap.search(m, SLO, start, 0.10, max_steps=14, confirm=True, confirm_breaks=True, floor=True)
        return json.loads(json.dumps(r.as_dict()))

    stall = lambda rate, n: {"extra_us": 2_650.0, "send_lag_p50_us": 101.0} if (rate, n) == (5_000, 1) else 0.0  # noqa: E731
    section = {"slos": ["p99=1ms"], "conns": 10, "size": 1024, "precision": 0.10,
               "models": {"held": entry(busy_server(12_000, tail=stall), 5_000),
                          "hostbound": entry(busy_server(20_000, tail=lambda rate, n: 2_000.0), 1_000)}}
    held = capacity_text(section, "held")
    lo, hi = section["models"]["held"]["bracket"]
    assert held.startswith(f"{lo:,.0f} (< {hi:,.0f})") and held.endswith(f", {sum(section['models']['held']['retried'].values())} retried")
    assert capacity_text(section, "hostbound") == "none: below the host's floor, 4 retried, 2 idle-server breaks set aside"
    floor = floor_text(section)
    assert "p99 0.05-2.05 ms at 100-500 msgs/s" in floor and "`hostbound`" in floor and "`held`" not in floor
    text = "\n".join(summary_lines({"matrix": {"run": {}}, "cells": [], "capacity": section}))
    assert "The SLO (p99 <= 1ms) is below this host's latency at a light load for: `hostbound`" in text
    assert "No rate met" not in text and "not measured" not in text and floor in text


def test_a_start_rate_the_client_cannot_offer_comes_down_below_it_when_the_floor_was_offered():
    """make bench starts each search at half the closed-loop rate, which the load generator often cannot offer
    open loop (its process waits for its CPU): with the floor offered, the search comes down below that ceiling
    and finds the server's capacity instead of ending with none."""
    real = busy_server(6_000)

    def measure(rate):
        step = real(rate)
        if rate > 20_000:
            step.loadgen_wait_pct = 12.0  # the client waited for its CPU: invalid, "client cannot offer this rate"
        return step

    r = cap.search(measure, SLO, start_rate=50_000, precision=0.05, confirm_breaks=True, floor=True, max_steps=30)
    assert not r.steps[1].valid and "client cannot offer" in r.steps[1].reason
    assert r.complete and r.bracket[0] <= 6_000 < r.bracket[1] and r.bracket[1] / r.bracket[0] - 1 <= 0.05
    # without a floor the client ceiling ends the search at once, as before
    plain = cap.search(measure, SLO, start_rate=50_000, precision=0.05, confirm_breaks=True, max_steps=30)
    assert plain.capacity_msgs_per_s is None and plain.stop is cap.Stop.STEP_INVALID
