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
