"""The load generator's stats core and payloads: no sockets, hand-computed values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen import stats
from loadgen.config import parse_cpus, parse_size
from loadgen.payload import MessageMaker

values = st.lists(st.integers(1, 10**11), min_size=0, max_size=2000)


@settings(max_examples=60, deadline=None)
@given(vals=values)
def test_batch_recording_equals_one_by_one(vals):
    one, batch = stats.new_histogram(), stats.new_histogram()
    for v in vals:
        one.record_value(v)
    stats.record_batch(batch, vals)
    assert list(batch.counts) == list(one.counts)
    assert batch.get_total_count() == one.get_total_count() == len(vals)
    if vals:
        assert batch.get_max_value() == one.get_max_value()
        assert batch.get_min_value() == one.get_min_value()


@settings(max_examples=40, deadline=None)
@given(parts=st.lists(values, min_size=1, max_size=5))
def test_merged_histograms_equal_one_histogram_of_all_samples(parts):
    whole = stats.new_histogram()
    stats.record_batch(whole, [v for p in parts for v in p])
    encoded = []
    for p in parts:
        h = stats.new_histogram()
        stats.record_batch(h, p)
        encoded.append(stats.encode(h))
    merged = stats.merge(encoded)
    assert list(merged.counts) == list(whole.counts)
    assert merged.get_total_count() == whole.get_total_count()
    for q in (50, 90, 99, 99.9, 100):
        assert merged.get_value_at_percentile(q) == whole.get_value_at_percentile(q)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(stats.LOWEST_NS, stats.HIGHEST_NS), min_size=1, max_size=300))
def test_numpy_mean_equals_the_packages_mean(vals):
    h = stats.new_histogram()
    stats.record_batch(h, vals)
    assert stats.mean_value(h) == pytest.approx(h.get_mean_value(), rel=1e-12)


def test_out_of_range_values_are_clamped_and_counted():
    h = stats.new_histogram()
    assert stats.record_batch(h, [0, -5, stats.HIGHEST_NS * 2, 1000]) == 3
    assert h.get_total_count() == 4


def test_percentiles_of_known_distribution():
    h = stats.new_histogram()
    stats.record_batch(h, [i * 1000 for i in range(1, 1001)])  # 1..1000 us
    s = stats.summary_us(h)
    assert s["count"] == 1000
    assert s["p50"] == pytest.approx(500, rel=0.002)
    assert s["p99"] == pytest.approx(990, rel=0.002)
    assert s["max"] == pytest.approx(1000, rel=0.002)
    assert s["mean"] == pytest.approx(500.5, rel=0.002)


def test_empty_summary():
    assert stats.summary_us(stats.new_histogram())["p99"] is None


def test_jain_index():
    assert stats.jain_index([5, 5, 5, 5]) == pytest.approx(1.0)
    assert stats.jain_index([1, 0, 0, 0]) == pytest.approx(0.25)
    assert stats.jain_index([1, 3]) == pytest.approx(16 / 20)
    f = stats.fairness([3, 1, 2])
    assert (f["min"], f["median"], f["max"]) == (1, 2.0, 3)


def test_verdicts():
    wall = 10.0
    busy_server = stats.SideCpu(9.8, 9.8, 1)
    idle_server = stats.SideCpu(5.0, 5.0, 1)
    busy_client = stats.SideCpu(9.9, 9.9, 1)
    idle_client = stats.SideCpu(3.0, 3.0, 1)
    assert stats.verdict(idle_client, busy_server, wall)[0] == "server-bound"
    v, note = stats.verdict(busy_client, idle_server, wall)
    assert v == "client-bound" and "measures the load generator" in note
    assert stats.verdict(idle_client, idle_server, wall)[0] == "neither"
    # both busy: never "server-bound" (a saturated client cannot vouch for the server's ceiling)
    v, note = stats.verdict(busy_client, busy_server, wall)
    assert v == "both-saturated" and "server us/msg" in note
    assert stats.verdict(stats.SideCpu(9.0, 9.0, 1), busy_server, wall)[0] == "both-saturated"  # exactly 90%
    # a 4-worker server using 3.9 of 4 CPUs is saturated though no single process is
    assert stats.verdict(idle_client, stats.SideCpu(39.0, 9.75, 4), wall)[0] == "server-bound"
    assert stats.verdict(idle_client, stats.SideCpu(20.0, 5.0, 4), wall)[0] == "neither"
    assert stats.per_msg_us(2.0, 1_000_000) == 2.0


@pytest.mark.parametrize("text, n", [("1", 1), ("64", 64), ("1k", 1024), ("16K", 16384), ("1M", 1 << 20), ("256KiB", 256 << 10)])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "0", "1x", "-3", "k"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_parse_cpus():
    assert parse_cpus("0-2,5") == (0, 1, 2, 5)
    with pytest.raises(ValueError):
        parse_cpus("2-1")


@pytest.mark.parametrize("size", [1, 7, 15, 16, 17, 1024, 300_000])
def test_messages_are_distinct_and_classified(size):
    m = MessageMaker(conn_id=3, size=size)
    msgs = [m.message(s) for s in range(8)]
    assert all(len(x) == size for x in msgs)
    if size > 1:
        assert len(set(msgs)) == len(msgs), "consecutive messages must differ"
    other = MessageMaker(conn_id=4, size=size)
    if size >= 16:
        assert m.message(0) != other.message(0), "connections must differ"
    if size >= 2:
        assert m.classify(msgs[1], 0) == "sequence"
        bad = bytearray(msgs[0])
        bad[0] ^= 0xFF  # (at 16 bytes a flipped sequence byte *is* another valid message)
        assert m.classify(bytes(bad), 0) == "corrupt"


def test_ring_memory_is_bounded_for_large_messages():
    m = MessageMaker(0, 4 << 20)
    assert len(m.ring) * (4 << 20) <= 17 << 20
    assert len({m.message(s) for s in range(4)}) == 4


def test_wait_pct_is_the_longest_wait_of_one_process_not_the_sum():
    before = {1: 0.0, 2: 1.0, 3: 5.0}
    after = {1: 0.02, 2: 1.03, 3: 5.01}  # each waited 1-3% of a 1 s window: 6% in all
    assert stats.wait_pct(before, after, 1.0) == 3.0
    assert stats.wait_pct(before, {1: 0.5, 2: 1.0, 3: 5.0}, 2.0) == 25.0
    assert stats.wait_pct(before, {1: 0.1}, 1.0) is None  # a process came or went: not comparable
    assert stats.wait_pct({}, {}, 1.0) is None
