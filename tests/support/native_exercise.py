"""Exercise every path of the native engine in one process, for memory checkers (``make check-native``).

    python tests/support/native_exercise.py [ROUNDS]

Runs under valgrind (leaks, invalid reads and writes) and with an AddressSanitizer + UBSan build of the
extension: over socketpairs, in memory, a peer thread answers correctly, in pieces, with flipped bytes,
with another message, with extra bytes, or closes; open loop with timers; full sample arrays; timeouts and the
drain; bad arguments. Exits 0 when every path ran and gave the expected counts; the checkers judge the memory.
"""

from __future__ import annotations

import gc
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repository

from loadgen.payload import MessageMaker, shared_ring  # noqa: E402

NS = 10**9


def peer_loop(peer: socket.socket, reply, stop: threading.Event) -> None:
    peer.settimeout(0.02)
    while not stop.is_set():
        try:
            data = peer.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return
        if not data:
            return
        chunks = reply(data)
        if chunks is None:  # the peer goes away: EOF for the engine
            peer.close()
            return
        for chunk in chunks:
            try:
                peer.sendall(chunk)
            except OSError:
                return


def profile_args(text: str, conns: int) -> dict:
    """The native Engine's keyword arguments for a load profile (as loadgen/engine/native.py passes them)."""
    from loadgen.profile import parse

    prof = parse(text)
    return {"profile": [(p.start_s, p.duration_s, p.rate_from, p.rate_to, c) for p, c in zip(prof.phases, prof.cumulative)],
            "profile_total": prof.total, "sched_conns": conns}


def run(size: int, depth: int, reply, seconds: float = 0.15, interval: int = 0, conns: int = 2, timeout_s=None,
        profile=None):
    from loadgen.engine import _native  # the extension itself: no fallback here

    pairs = [socket.socketpair() for _ in range(conns)]
    for a, _b in pairs:
        a.setblocking(False)
    eng = _native.Engine([a.fileno() for a, _ in pairs], list(range(conns)), size, depth, shared_ring(size, 0),
                         interval, [interval * i // conns for i in range(conns)], -1, **(profile or {}))
    stop = threading.Event()
    threads = [threading.Thread(target=peer_loop, args=(b, reply, stop), daemon=True) for _, b in pairs]
    for t in threads:
        t.start()
    now = time.perf_counter_ns()
    end = now + int(seconds * NS)
    eng.start(now, now + int(seconds * NS / 3), end)
    taken = 0
    while True:
        status = eng.run(end)
        lat, unc, lag = eng.take()
        taken += len(lat) // 8
        if status != 3:
            break
    if timeout_s is not None:
        eng.check_timeouts(time.perf_counter_ns(), int(timeout_s * NS), timeout_s)
    eng.stop_sending()
    eng.run(time.perf_counter_ns() + 2 * NS)  # the drain: ends as soon as nothing is in flight
    eng.give_up(end, True)
    res = eng.result()
    stop.set()
    for t in threads:
        t.join(5)
    for a, b in pairs:
        a.close()
        b.close()
    del eng
    return res, taken


def main() -> int:
    from loadgen.engine import _native

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    echo = lambda d: [d]  # noqa: E731
    for _ in range(rounds):
        for size in (1, 15, 16, 17, 1024, 70_000):
            for depth in (1, 3):
                piece = 7 if size <= 1024 else 4093  # splits across headers and bodies, not too slow under valgrind
                res, taken = run(size, depth, lambda d: [d[i:i + piece] for i in range(0, len(d), piece)])
                # under a memory checker a slow peer may leave echoes missing at the end (lost): never wrong bytes
                assert set(res["integrity"]) <= {"lost"}, (size, depth, res)
                res, _ = run(size, depth, echo, interval=200_000)  # open loop: timers, lag, uncorrected
                assert set(res["integrity"]) <= {"lost"}, (size, depth, res)

        # a 16-byte message has no body: one iovec each, so a deep queue fills a whole sendmsg with headers
        res, _ = run(16, 5000, echo, conns=1)
        assert set(res["integrity"]) <= {"lost"}, res

        def flip(d):
            b = bytearray(d)
            b[len(b) // 2] ^= 1
            return [bytes(b)]

        res, _ = run(1024, 1, flip)
        assert res["integrity"].get("corrupt", 0) + res["integrity"].get("sequence", 0) > 0, res
        other = MessageMaker(0, 64).message(5)
        res, _ = run(64, 1, lambda d: [other], conns=1)
        assert res["integrity"] == {"sequence": 1} or res["integrity"] == {"unexpected": 1}, res
        res, _ = run(64, 1, lambda d: [d + b"!!"])
        assert res["integrity"].get("unexpected", 0) >= 1, res
        res, _ = run(64, 2, lambda d: [], timeout_s=0.0)  # nothing comes back: timeouts, lost
        assert res["integrity"].get("lost", 0) >= 1, res

        def close_after(d, n=[0]):
            n[0] += 1
            return None if n[0] > 5 else [d]

        res, _ = run(64, 1, close_after, conns=1)
        assert res["outcome"] and "lost mid-run" in res["outcome"], res
        # a load profile: a ramp up, a spike, a pause and a ramp down, over the schedule's phases
        text = "ramp:0-20000:50ms,spike:60000:30ms,hold:0:20ms,ramp:30000-0:50ms"
        res, _ = run(64, 4, echo, interval=1, profile=profile_args(text, 2))
        assert set(res["integrity"]) <= {"lost"} and 0 < res["messages_total"] <= profile_args(text, 2)["profile_total"], res
        for bad in (dict(profile=[]), dict(profile=[(0, 1, 1, 1)]), dict(profile=[(0, -1, 1, 1, 0)]),
                    dict(profile=[(0, 1, 1, 1, 0), (2, 1, 1, 1, 1)]), dict(profile=[(0, float("nan"), 1, 1, 0)]),
                    dict(profile=[(0, 1, 1, 1, 0)], sched_conns=0), dict(profile=[(0, 1, 1, 1, 5)]),
                    dict(profile=[(0, 1, 10, 10, 0)], profile_total=10**6), dict(profile="x")):
            a, b = socket.socketpair()
            try:
                _native.Engine([a.fileno()], [0], 64, 1, shared_ring(64, 0), 1, [0], -1,
                               **{"profile_total": 1, "sched_conns": 1, **bad})
            except (ValueError, TypeError):
                pass
            else:
                raise AssertionError(f"accepted the profile {bad}")
            finally:
                a.close()
                b.close()
        for bad in ((0, 1, shared_ring(64, 0)), (64, 1, shared_ring(64, 0)[:3]), (64, 1, shared_ring(32, 0))):
            try:
                _native.Engine([], [], *bad, 0, [], -1)
            except ValueError:
                pass
            else:
                raise AssertionError(f"accepted {bad[:2]}")
        gc.collect()
    print("native_exercise: every path ran", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
