"""--cluster's arithmetic (loadgen/modes/cluster.py) without a cluster: several hosts' parts merged exactly, as
one histogram fed every sample, and the verdict when client hosts share a machine (the runs on real Dask
schedulers and workers: tests/test_cluster.py)."""

from __future__ import annotations

import numpy as np

from loadgen import stats

# -- the merge, on known data ---------------------------------------------------------------------------------

def _part(rng, t0: int, conns: list[int], intervals: int, shift_us: float):
    """One host's merge material as loadgen/modes/hostagent.py sends it, with known samples; returns (part, samples)."""
    samples, ivs, per_conn = [], [], []
    for i in range(intervals):
        s = (rng.lognormal(4.5, 0.6, 2000) + shift_us) * 1000
        s = s.astype(np.int64)
        samples.append(s)
        ivs.append([i, 0, {"i": i, "t_ns": t0 + (i + 1) * 10**9, "span_ns": 10**9, "msgs": len(s), "errors": 0,
                           "integrity": 0, "hist": stats.encode_samples(s.tobytes())}])
    total = sum(len(s) for s in samples)
    per_conn = [total // len(conns)] * len(conns)
    per_conn[0] += total - sum(per_conn)
    final = {"measured_end_ns": t0 + intervals * 10**9, "per_conn": per_conn, "messages_total": total + 50,
             "errors": {}, "integrity": {}, "integrity_samples": [], "outcome": "complete", "udp": None}
    part = {"intervals": ivs, "finals": [[0, final]], "connect_ns": [1000 * (c + 1) for c in conns],
            "warm_t_ns": t0, "incomplete": None, "client_cpu": None}
    return part, np.concatenate(samples)


def test_merged_percentiles_equal_one_histogram_fed_every_sample():
    from dataclasses import replace

    from loadgen.config import LoadConfig
    from loadgen.modes.cluster import merge_parts

    rng = np.random.default_rng(7)
    t0 = 1_700_000_000 * 10**9
    a, sa = _part(rng, t0, [0, 2, 4], 3, 0.0)
    b, sb = _part(rng, t0, [1, 3], 3, 400.0)  # a slower host: a distribution of its own
    cfg = replace(LoadConfig(conns=5, duration=3.0, warmup=0.0), workers=2)
    doc = merge_parts(cfg, [a, b], None, lambda m: None).document({}, (), None, None, "127.0.0.1", 1, None)
    r = doc["result"]
    one = stats.new_histogram()
    stats.record_batch(one, np.concatenate([sa, sb]))
    assert r["messages"] == len(sa) + len(sb) and r["messages_total"] == r["messages"] + 100
    assert r["latency_us"] == stats.summary_us(one)
    merged = stats.merge([r["histogram"]])
    for q in (50, 90, 99, 99.9, 100):
        assert merged.get_value_at_percentile(q) == one.get_value_at_percentile(q)
    # not the average of the two hosts' percentiles: the slow host's tail is the merged tail
    ha, hb = stats.new_histogram(), stats.new_histogram()
    stats.record_batch(ha, sa)
    stats.record_batch(hb, sb)
    mean_of_p50 = (ha.get_value_at_percentile(50) + hb.get_value_at_percentile(50)) / 2
    assert one.get_value_at_percentile(50) != mean_of_p50
    # the timeline by absolute second: each second holds both hosts' messages
    assert [t["msgs_per_s"] for t in r["timeline"]] == [4000.0, 4000.0, 4000.0]
    assert r["fairness"]["connections"] == 5 and r["connections"]["established"] == 5
    assert r["complete"] is True and r["duration_s"] == 3.0


def _host(name: str, machine: str, cpus: list[int]):
    from loadgen.modes.cluster import Host

    h = Host(f"tcp://{name}:1", {"name": name})
    h.identity = {"hostname": machine}
    h.result = {"doc": {"pinning": {"loadgen_cpus": cpus}}}
    return h


def test_client_hosts_on_one_machine_are_judged_together_and_never_flatter_the_server():
    from loadgen.modes.cluster import cluster_verdict

    half = stats.SideCpu(1.0, 0.5, 2)  # two processes at 50% over 2 CPUs: this host alone has headroom
    busy_server = stats.SideCpu(0.95, 0.95, 1)
    apart = [(_host("a", "m1", [0, 1]), half, 1.0), (_host("b", "m2", [0, 1]), half, 1.0)]
    assert cluster_verdict(apart, busy_server, "srv")[0] == "server-bound"
    together = [(_host("a", "m1", [0, 1]), half, 1.0), (_host("b", "m1", [0, 1]), half, 1.0)]
    verdict, detail = cluster_verdict(together, busy_server, "srv")  # 2 CPU-seconds a second on 2 CPUs
    assert verdict == "both-saturated" and "one machine (m1)" in detail
    light = stats.SideCpu(0.2, 0.1, 2)
    beside = [(_host("a", "srv", [0, 1]), light, 1.0), (_host("b", "m2", [0, 1]), light, 1.0)]
    verdict, detail = cluster_verdict(beside, busy_server, "srv")  # a client host on the server's machine
    assert verdict == "both-saturated" and "server's own machine" in detail
    assert cluster_verdict(beside, None, "srv")[0] == "neither"


def test_the_coordinators_silence_is_15_s_or_what_its_environment_says_and_a_bad_value_is_one_line(monkeypatch):
    import pytest

    from loadgen.modes import cluster
    from loadgen.runner import RunError

    monkeypatch.delenv(cluster.BEAT_TIMEOUT_ENV, raising=False)
    assert cluster.beat_timeout_s() == cluster.BEAT_TIMEOUT_S == 15.0
    monkeypatch.setenv(cluster.BEAT_TIMEOUT_ENV, "3")
    assert cluster.beat_timeout_s() == 3.0
    for bad in ("x", "2.5", "nan", "-4", ""):  # under 3 s a host could stop between two beats of a live coordinator
        monkeypatch.setenv(cluster.BEAT_TIMEOUT_ENV, bad)
        with pytest.raises(RunError, match="at least 3") as exc:
            cluster.beat_timeout_s()
        assert "\n" not in str(exc.value)
