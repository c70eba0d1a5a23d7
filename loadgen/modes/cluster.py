"""``loadgen/run.py --cluster tcp://SCHEDULER:8786``: one run whose load comes from several client hosts, on Dask
distributed, merged exactly.

Each Dask worker is one client host. The coordinator (this module, in the ``run.py`` process) talks only to the
Dask scheduler:

1. it refuses, before any traffic, a worker without echobench or with different echobench code (``identity``,
   probed by value so that it runs where echobench is missing), and a worker whose clock is further than
   ``--max-clock-offset`` from its own (offset measured through the scheduler, the sample with the shortest
   round trip kept);
2. it submits one task per worker (``host_task``), pinned to that worker. The task starts ``python -m
   loadgen.modes.hostagent`` on its host: an ordinary run (loadgen/runner.py) of its share of the connections over
   ``--workers`` pinned processes, which connects them all and says ready on a Dask queue;
3. when every host is ready it sets a Dask variable to one start instant on its own clock, 0.5 s ahead; each
   host converts it to its own clock with the offset measured in step 1, so all start measuring together;
4. it merges what the hosts return: counts add, histograms (identical parameters everywhere) add bucket by
   bucket, the timeline by absolute second (every host's interval i is the same second after the agreed
   warm-up end), fairness over every connection. ``hosts`` in the document has one entry per Dask worker.

A host that dies or leaves the cluster mid-run, or a lost scheduler, ends the run incomplete (exit 3) with what
the other hosts measured; every wait is bounded, so nothing hangs. Ctrl-C stops every host (a Dask event).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

from .. import stats
from ..config import LoadConfig
from ..envinfo import environment
from ..lifecycle import RunScope
from ..runner import EXIT_INCOMPLETE, RunError, Runner, connect_budget_s, exit_code

ROOT = Path(__file__).resolve().parents[2]  # the repository (loadgen/modes/cluster.py)
CODE_DIRS = ("loadgen", "servers")  # what must be byte-identical on every host
SCHEDULER_TIMEOUT_S = 10.0
CLOCK_SAMPLES = 7
CLOCK_SAMPLES_MAX = 50
START_AHEAD_NS = 1_000_000_000  # the start instant is this far ahead when it is set: every host has it by then
BEAT_TIMEOUT_S = 15.0  # a host stops on its own when the coordinator's heartbeat is older than this
# ... unless the coordinator's environment sets another silence (a test of a killed coordinator need not wait 15 s)
BEAT_TIMEOUT_ENV = "ECHOBENCH_CLUSTER_SILENCE_S"
DASK_CALL_S = 30.0  # no single call to the scheduler may take longer
AGENT_START_S = 60.0  # a host's agent: Python start-up and imports on a slow host, before it connects
POLL_S = 0.25
EXTRA = "pip install 'echobench[cluster]' (make venv installs it)"


def unavailable_reason() -> str | None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return f"--cluster needs Dask distributed, which is not installed: {EXTRA}"
    return None


def identity() -> dict:
    """What must match on every host: echobench's version and a hash of its code (servers and load generator)."""
    import importlib.metadata
    import platform

    h = hashlib.sha256()
    for d in CODE_DIRS:
        for p in sorted((ROOT / d).rglob("*")):
            if p.suffix in (".py", ".c") and p.is_file() and "__pycache__" not in p.parts:  # code, not matrices
                h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    try:
        version = importlib.metadata.version("echobench")
    except importlib.metadata.PackageNotFoundError:
        version = None
    from ..engine import native

    return {"version": version, "code": h.hexdigest()[:16], "python": platform.python_version(),
            "hostname": socket.gethostname(), "native_engine": native.UNAVAILABLE is None, "cpu_count": os.cpu_count()}


# The probe travels by value (its module is not importable anywhere), so that it runs, and says so, on a worker
# where echobench is missing: a function of this module would fail there while being unpickled.
_PROBE_SOURCE = '''
def echobench_probe():
    try:
        from loadgen.modes.cluster import identity
    except Exception as exc:
        return {"error": "echobench is not installed there (" + type(exc).__name__ + ": " + str(exc) + ")"}
    try:
        return identity()
    except Exception as exc:
        return {"error": "its echobench is broken (" + type(exc).__name__ + ": " + str(exc) + ")"}
'''


def _probe():
    ns = {"__name__": "echobench_cluster_probe"}
    exec(_PROBE_SOURCE, ns)
    return ns["echobench_probe"]


# -- on each client host ------------------------------------------------------------------------------------------

def beat_timeout_s() -> float:
    """How long a host waits on a silent coordinator: ``BEAT_TIMEOUT_S``, or ``ECHOBENCH_CLUSTER_SILENCE_S``
    (at least 3 s: the coordinator beats once a second). RunError (one line) when that is not a number of seconds."""
    text = os.environ.get(BEAT_TIMEOUT_ENV)
    if text is None:
        return BEAT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 3:  # NaN too
        raise RunError(f"{BEAT_TIMEOUT_ENV}={text!r}: give a number of seconds, at least 3")
    return value


def host_task(spec: dict) -> dict:
    """Runs in a Dask worker: start this host's agent, relay ready / start / stop, return its final report."""
    from distributed import Event, Queue, Variable

    names = spec["names"]
    ready_q, start_v, stop_e = Queue(names["ready"]), Variable(names["start"]), Event(names["stop"])
    beat_v = Variable(names["beat"])
    err = tempfile.TemporaryFile()
    # (no preexec_fn: this process is threaded; the agent arranges to die with us itself, after exec)
    proc = subprocess.Popen([sys.executable, "-m", "loadgen.modes.hostagent"], cwd=str(ROOT), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    watchdog = threading.Timer(spec["deadline_s"], proc.kill)  # whatever happens, the agent ends
    watchdog.daemon = True
    watchdog.start()
    done = threading.Event()

    def send(msg: dict) -> None:
        try:
            proc.stdin.write(json.dumps(msg) + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def watch_stop() -> None:
        """Until the agent ends: the coordinator's stop event, and its heartbeat (a coordinator killed outright,
        or cut off, sends no stop; its beat goes stale instead)."""
        offset = spec["agent"]["offset_ns"]
        while not done.is_set() and proc.poll() is None:
            try:
                if stop_e.wait(POLL_S * 2):
                    why = start_v.get(timeout=5)  # the coordinator says why in the start variable
                    send(why if why.get("kind") == "stop" else {"kind": "stop", "reason": "stopped by the coordinator"})
                    return
                beat = beat_v.get(timeout=5)
            except Exception:  # noqa: BLE001 (the scheduler is gone: the agent's own deadlines end it)
                return
            silent_s = (time.time_ns() - offset - beat) / 1e9  # on the coordinator's clock
            if silent_s > spec.get("beat_timeout_s", BEAT_TIMEOUT_S):
                send({"kind": "stop", "reason": f"the coordinator went silent (no heartbeat for {silent_s:.0f} s)"})
                return

    final = None
    try:
        send({**spec["agent"], "parent_pid": os.getpid()})
        line = proc.stdout.readline()
        msg = json.loads(line) if line else None
        if msg is not None and msg["kind"] == "ready":
            ready_q.put({"addr": spec["addr"], "conns": msg["conns"]})
            try:
                start = start_v.get(timeout=spec["start_wait_s"])
            except Exception:  # noqa: BLE001 (TimeoutError, or the scheduler gone)
                start = {"kind": "stop", "reason": "no start instant from the coordinator"}
            threading.Thread(target=watch_stop, daemon=True).start()
            send(start)
            line = proc.stdout.readline()
            msg = json.loads(line) if line else None
        final = msg if msg is not None and msg["kind"] == "final" else None
    finally:
        done.set()
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        watchdog.cancel()
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
        err.close()
    if final is None:
        return {"kind": "final", "code": EXIT_INCOMPLETE,
                "error": f"its load generator exited (code {proc.returncode}) without a result: {' | '.join(tail)}"}
    return final


# -- the coordinator -----------------------------------------------------------------------------------------------

def run_cluster(cfg: LoadConfig, log) -> tuple[dict, int]:
    if reason := unavailable_reason():
        raise RunError(reason)
    import logging

    from distributed import Client

    # Dask logs its own account of a lost scheduler or worker as tracebacks on stderr; the run says what happened
    # in one line and in its document instead
    # (Dask's configuration gives several of its loggers levels of their own: each is quietened)
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
               if n == "distributed" or n.startswith("distributed.")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        return _run_cluster(cfg, log, Client)
    finally:
        for lg, level in zip(loggers, old):
            lg.setLevel(level)


def _run_cluster(cfg: LoadConfig, log, Client) -> tuple[dict, int]:
    security = None
    if cfg.cluster_tls:
        from distributed.security import Security

        ca, cert, key = cfg.cluster_tls
        security = Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)
    try:
        client = Client(cfg.cluster, timeout=SCHEDULER_TIMEOUT_S, set_as_default=False, security=security)
    except Exception as exc:  # noqa: BLE001 (OSError, TimeoutError, a TLS error: one line)
        raise RunError(f"--cluster {cfg.cluster}: cannot reach the Dask scheduler: {_one_line(exc)}") from None
    try:
        return Coordinator(cfg, log, client).run()
    finally:
        try:
            client.close(timeout=5)
        except Exception:  # noqa: BLE001 (the scheduler is gone already)
            pass


def _bounded(fn, *args, timeout: float = DASK_CALL_S, **kwargs):
    """``fn(*args, **kwargs)`` (a blocking call to the Dask scheduler), or TimeoutError after ``timeout`` s: a
    scheduler that is frozen rather than gone (stopped, a hung machine) still acknowledges TCP, and Dask's own
    calls would wait for it forever. The call runs in a daemon thread, which an unanswered one leaves behind."""
    box: dict = {}
    done = threading.Event()

    def call() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 (handed to the caller)
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=call, daemon=True).start()
    if not done.wait(timeout):
        raise TimeoutError(f"the Dask scheduler did not answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Host:
    def __init__(self, addr: str, info: dict) -> None:
        self.addr = addr
        self.name = str(info.get("name", addr))
        self.ip = info.get("host") or addr.split("://")[-1].rsplit(":", 1)[0]
        self.identity: dict | None = None
        self.offset_ns = 0
        self.rtt_ns = 0
        self.conn_ids: list[int] = []
        self.future = None
        self.ready = False
        self.result: dict | None = None
        self.lost: str | None = None  # why this host gave no result


class Coordinator:
    def __init__(self, cfg: LoadConfig, log, client) -> None:
        self.cfg = cfg
        self.log = log
        self.client = client
        self.run_id = uuid.uuid4().hex[:12]
        self.incomplete: str | None = None
        self.server = None
        self.server_cpu = None
        self.tls_dir = None

    # -- before any traffic ------------------------------------------------------------------------------------
    def _hosts(self) -> list[Host]:
        workers = self._workers()
        if not workers:
            raise RunError(f"--cluster {self.cfg.cluster}: the scheduler has no workers; start one per client host "
                           f"(dask worker {self.cfg.cluster} --nworkers 1)")
        hosts = [Host(a, i) for a, i in sorted(workers.items())]
        if self.cfg.cluster_workers:
            chosen = []
            for want in self.cfg.cluster_workers:
                match = [h for h in hosts if want in (h.addr, h.name)]
                if not match:
                    raise RunError(f"--cluster-workers: no Dask worker {want!r} (there are: "
                                   f"{', '.join(f'{h.name} {h.addr}' for h in hosts)})")
                chosen += [h for h in match if h not in chosen]
            hosts = chosen
        if self.cfg.conns < len(hosts):
            raise RunError(f"--conns {self.cfg.conns} is fewer than the {len(hosts)} client hosts: every host needs a connection")
        return hosts

    def _check_identity(self, hosts: list[Host]) -> None:
        mine = identity()
        got = _bounded(self.client.run, _probe(), workers=[h.addr for h in hosts], on_error="return")
        for h in hosts:
            ident = got.get(h.addr)
            if isinstance(ident, BaseException):
                raise RunError(f"--cluster: worker {h.name} ({h.addr}) refused: its probe failed ({_one_line(ident)})")
            if "error" in ident:
                raise RunError(f"--cluster: worker {h.name} ({h.addr}) refused: {ident['error']}; install it there: {EXTRA}")
            for key in ("version", "code"):
                if ident[key] != mine[key]:
                    raise RunError(
                        f"--cluster: worker {h.name} ({h.addr}) refused: it runs echobench {ident['version']} (code "
                        f"{ident['code']}) and this host {mine['version']} (code {mine['code']}); install the same "
                        "echobench on every host")
            h.identity = ident

    def _measure_clocks(self, hosts: list[Host]) -> None:
        """Each host's clock minus ours, from round trips through the scheduler: the midpoint of the shortest one,
        whose error is at most half that round trip. At least CLOCK_SAMPLES of them, and more (up to
        CLOCK_SAMPLES_MAX) until one is short enough to tell the offset to within half --max-clock-offset: a
        host is refused for a clock known to be off, never for a busy moment of the network or the scheduler."""
        bound_ns = self.cfg.max_clock_offset * 1e9
        for h in hosts:
            best = None
            for k in range(CLOCK_SAMPLES_MAX):
                t0 = time.time_ns()
                theirs = _bounded(self.client.run, time.time_ns, workers=[h.addr])[h.addr]
                t1 = time.time_ns()
                if best is None or t1 - t0 < best[0]:
                    best = (t1 - t0, theirs - (t0 + t1) // 2)
                if k + 1 >= CLOCK_SAMPLES and best[0] / 2 <= bound_ns / 2:
                    break
            h.rtt_ns, h.offset_ns = best
            if h.rtt_ns / 2 > bound_ns / 2:
                raise RunError(
                    f"--cluster: worker {h.name} ({h.addr}) refused: its clock cannot be told to within "
                    f"{bound_ns / 2e6:g} ms (half --max-clock-offset {bound_ns / 1e6:g} ms) from here: the shortest of "
                    f"{CLOCK_SAMPLES_MAX} round trips through the scheduler took {h.rtt_ns / 1e6:.1f} ms")
            if abs(h.offset_ns) > bound_ns:
                raise RunError(
                    f"--cluster: worker {h.name} ({h.addr}) refused: its clock is {h.offset_ns / 1e6:+.1f} ms off this "
                    f"host's (measured to within {h.rtt_ns / 2e6:.1f} ms), over --max-clock-offset "
                    f"{bound_ns / 1e6:g} ms; synchronise the clocks (chrony, NTP)")

    def _check_target(self, hosts: list[Host]) -> None:
        cfg = self.cfg
        if _is_loopback(cfg.host):
            far = [h for h in hosts if not _is_loopback(h.ip)]
            if far:
                raise RunError(f"--cluster: the server address {cfg.host} is loopback, which worker {far[0].name} at "
                               f"{far[0].ip} cannot reach; give --host an address the client hosts can reach")
        shared: dict[str, int] = {}
        for h in hosts:
            shared[h.ip] = shared.get(h.ip, 0) + 1
        for ip, n in shared.items():
            if n > 1 and not _is_loopback(ip):
                self.log(f"{n} Dask workers on host {ip} share its CPUs: start one per host (dask worker --nworkers 1)")

    def _start_server(self, scope: RunScope) -> None:
        from ..target import CpuSampler

        cfg = self.cfg = scope.start_server(self.cfg.server_cpus, (self.cfg.host,))  # the address the hosts verify
        self.server, self.tls_dir = scope.server, scope.tls_dir
        host, port = self.server.addr
        self.cfg = replace(cfg, host=host, port=port, server_pid=self.server.pid)
        self.log(f"started {cfg.server} (pid {self.server.pid}) on {host}:{port}")
        self.server_cpu = CpuSampler([self.server.pid], children=True)

    # -- the run -------------------------------------------------------------------------------------------------
    def run(self) -> tuple[dict, int]:
        from distributed import Event, Queue, Variable

        cfg = self.cfg
        names = {k: f"echobench-{self.run_id}-{k}" for k in ("ready", "start", "stop", "beat")}
        try:  # before any traffic: whatever goes wrong is one line and exit 2
            self.beat_timeout = beat_timeout_s()
            hosts = self._hosts()
            self._check_identity(hosts)
            self._measure_clocks(hosts)
            self._check_target(hosts)
            ready_q = _bounded(Queue, names["ready"], client=self.client)
            start_v = _bounded(Variable, names["start"], client=self.client)
            stop_e = _bounded(Event, names["stop"], client=self.client)
            self.beat_v = _bounded(Variable, names["beat"], client=self.client)
        except RunError:
            raise
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 (the scheduler or a worker went away mid-check)
            raise RunError(f"--cluster {cfg.cluster}: the cluster failed before any traffic: {_one_line(exc)}") from None
        for i, h in enumerate(hosts):
            h.conn_ids = list(range(i, cfg.conns, len(hosts)))
        scope = RunScope(cfg).__enter__()  # SIGTERM as Ctrl-C; the managed server stopped however the run ends
        env = environment()
        try:
            if cfg.server:
                self._start_server(scope)
                cfg = self.cfg
            elif cfg.server_pid is not None:
                from ..target import CpuSampler

                self.server_cpu = CpuSampler([cfg.server_pid], children=True)
            self.log(f"{len(hosts)} client host{'s' if len(hosts) > 1 else ''}: " + ", ".join(
                f"{h.name} ({len(h.conn_ids)} conns, clock {h.offset_ns / 1e3:+.0f} us)" for h in hosts))
            self._submit(hosts, names)
            self._wait_ready(hosts, ready_q, start_v)
            if self.incomplete is None:
                self._traffic(hosts, start_v, stop_e)
        except KeyboardInterrupt:
            self.incomplete = self.incomplete or "interrupted"
            self._stop_all(hosts, start_v, stop_e, "interrupted")
            self._collect(hosts, time.monotonic() + 10)
        finally:
            scope.restore()
            for h in hosts:
                if h.future is not None and h.result is None:
                    h.future.cancel()
            scope.close()  # the managed server stopped, its certificate folder removed
        return self._document(hosts, env)

    def _submit(self, hosts: list[Host], names: dict) -> None:
        cfg = self.cfg
        tls_pem = Path(cfg.tls_ca).read_text() if cfg.tls and cfg.tls_ca else None
        run_s = cfg.warmup + cfg.duration
        from ..engine import drain_seconds

        for h in hosts:
            h.connect_s = connect_budget_s(cfg, len(h.conn_ids))
        # every host waits, once ready, as long as the coordinator may wait for the slowest to be ready, and more
        start_wait_s = AGENT_START_S + max(h.connect_s for h in hosts) + 30
        for h in hosts:
            agent_cfg = replace(cfg, cluster=None, json_path=None, hdr_path=None, quiet=True, server=None,
                                server_pid=None, server_workers=None, server_args=(), tls_ca=None)
            spec = {"addr": h.addr, "names": names, "start_wait_s": start_wait_s, "beat_timeout_s": self.beat_timeout,
                    "deadline_s": AGENT_START_S + start_wait_s + run_s + drain_seconds(cfg) + 60,
                    "agent": {"cfg": agent_cfg.as_dict(), "conn_ids": h.conn_ids, "offset_ns": h.offset_ns,
                              "name": h.name, "tls_ca_pem": tls_pem, "start_wait_s": start_wait_s}}
            h.future = self.client.submit(host_task, spec, key=f"echobench-{self.run_id}-host-{h.name}",
                                          workers=[h.addr], allow_other_workers=False, retries=0, pure=False)

    def _workers(self) -> dict:
        """Every worker the scheduler knows now. (Not ``client.scheduler_info()``: it returns a cache that the
        client's own periodic refresh overwrites with a copy that lists no workers, so it can come back empty.)"""
        return _bounded(self.client.sync, self.client.scheduler.identity, n_workers=-1)["workers"]

    def _members(self) -> set[str]:
        return set(self._workers())

    def _check_hosts(self, hosts: list[Host]) -> list[Host]:
        """Hosts that left the cluster, or whose task ended in an error; marks them. Returns the newly lost."""
        try:
            members = self._members()
        except Exception as exc:  # noqa: BLE001 (the scheduler connection is gone)
            self.incomplete = self.incomplete or f"lost the Dask scheduler: {_one_line(exc)}"
            newly = [h for h in hosts if h.result is None and h.lost is None]
            for h in newly:
                h.lost = "no result: the scheduler was lost"
            return newly
        newly = []
        for h in hosts:
            if h.result is not None or h.lost is not None:
                continue
            if h.future.status == "finished":
                try:
                    h.result = h.future.result(timeout=10)
                except Exception as exc:  # noqa: BLE001
                    h.lost = f"its result could not be fetched ({_one_line(exc)})"
                    newly.append(h)
            elif h.future.status in ("error", "cancelled", "lost"):
                h.lost = f"its task ended in {h.future.status}" + (
                    f" ({_one_line(h.future.exception(timeout=5))})" if h.future.status == "error" else "")
                newly.append(h)
            elif h.addr not in members:
                h.lost = "the host left the cluster mid-run (died, or lost the scheduler)"
                newly.append(h)
        return newly

    def _wait_ready(self, hosts: list[Host], ready_q, start_v) -> None:
        deadline = time.monotonic() + AGENT_START_S + max(h.connect_s for h in hosts)
        while not all(h.ready for h in hosts):
            if time.monotonic() > deadline:
                self.incomplete = "not every client host connected in time: " + ", ".join(h.name for h in hosts if not h.ready)
                break
            try:  # what is there now, without waiting (a timed get logs an error on the scheduler at each timeout)
                got = _bounded(ready_q.get, batch=True)
            except Exception as exc:  # noqa: BLE001 (the scheduler connection is gone)
                self.incomplete = f"lost the Dask scheduler before the start: {_one_line(exc)}"
                break
            for m in got:
                for h in hosts:
                    if h.addr == m["addr"]:
                        h.ready = True
            if all(h.ready for h in hosts):
                break
            time.sleep(POLL_S)
            self._check_hosts(hosts)
            failed = [h for h in hosts if not h.ready and (h.lost or h.result is not None)]
            if failed:
                h = failed[0]
                why = h.lost or (h.result.get("error") or (h.result.get("doc") or {}).get("result", {}).get("incomplete_reason"))
                self.incomplete = f"client host {h.name} failed before the start: {why}"
                break
        if self.incomplete is not None:
            self._stop_all(hosts, start_v, None, self.incomplete)
            self._collect(hosts, time.monotonic() + 30)

    def _beat(self) -> None:
        """The heartbeat every host watches (loadgen/modes/cluster.py host_task): now, on this host's clock."""
        try:
            _bounded(self.beat_v.set, time.time_ns(), timeout=5)
        except Exception:  # noqa: BLE001 (the scheduler is gone: noticed by the membership check)
            pass

    def _stop_all(self, hosts, start_v, stop_e, reason: str) -> None:
        try:
            _bounded(start_v.set, {"kind": "stop", "reason": f"stopped by the coordinator: {reason}"}, timeout=5)
            if stop_e is not None:
                _bounded(stop_e.set, timeout=5)
        except Exception:  # noqa: BLE001 (the scheduler is gone: every agent has its own deadline)
            pass

    def _traffic(self, hosts: list[Host], start_v, stop_e) -> None:
        from ..engine import drain_seconds

        cfg = self.cfg
        self._beat()
        t_start = time.time_ns() + START_AHEAD_NS
        _bounded(start_v.set, {"kind": "start", "t_ns": t_start})
        self.log(f"every client host connected ({sum(len(h.conn_ids) for h in hosts):,} connections); all start "
                 f"{START_AHEAD_NS / 1e6:.0f} ms from now, warm-up {cfg.warmup:g} s, measuring {cfg.duration:g} s")
        warm_end = t_start + int(cfg.warmup * 1e9)
        end = warm_end + int(cfg.duration * 1e9)
        self.cpu0 = self.cpu1 = None
        hard = time.monotonic() + (end - time.time_ns()) / 1e9 + drain_seconds(cfg) + 60
        from ..runner import Progress

        progress = Progress(cfg.quiet, cfg.warmup + cfg.duration)
        try:
            self._traffic_loop(hosts, start_v, stop_e, t_start, warm_end, end, hard, progress)
        finally:
            progress.stop()
        if self.server_cpu is not None and self.cpu1 is None and self.cpu0 is not None:
            self.cpu1 = (self.server_cpu.sample(), time.monotonic())

    def _traffic_loop(self, hosts, start_v, stop_e, t_start, warm_end, end, hard, progress) -> None:
        stopped = False
        shown = 0
        while any(h.result is None and h.lost is None for h in hosts):
            now = time.time_ns()
            if now >= t_start and (now - t_start) // 10**9 >= shown and now < end:  # once a second
                shown += 1
                self._beat()
                running = sum(h.result is None and h.lost is None for h in hosts)
                progress.update(f"{(now - t_start) / 1e9:5.1f}/{progress.total_s:g} s  {running} of {len(hosts)} "
                                f"client host{'s' if len(hosts) > 1 else ''} running")
            if self.server_cpu is not None:
                if self.cpu0 is None and now >= warm_end:
                    self.cpu0 = (self.server_cpu.sample(), time.monotonic())
                if self.cpu1 is None and now >= end:
                    self.cpu1 = (self.server_cpu.sample(), time.monotonic())
            if self.server is not None and not self.server.alive() and self.incomplete is None:
                self.incomplete = (f"server {self.server.model} died mid-run (exit code {self.server.proc.returncode}): "
                                   f"{self.server.stderr_tail(3)}")
            lost = self._check_hosts(hosts)
            if lost and self.incomplete is None:
                self.incomplete = f"client host {lost[0].name} gave no result: {lost[0].lost}"
            if self.incomplete is not None and not stopped:  # the others stop too, keeping what they measured
                self._stop_all(hosts, start_v, stop_e, self.incomplete)
                stopped = True
                hard = min(hard, time.monotonic() + 30)
            if time.monotonic() > hard:
                for h in hosts:
                    if h.result is None and h.lost is None:
                        h.lost = "no result before the deadline"
                self.incomplete = self.incomplete or "not every client host finished before the deadline"
                self._stop_all(hosts, start_v, stop_e, self.incomplete)  # no straggler keeps loading the server
                break
            pending = [h.future for h in hosts if h.result is None and h.lost is None]
            nxt = [x for x in (warm_end, end) if x > now]
            wait_s = min(POLL_S, (min(nxt) - now) / 1e9) if nxt else POLL_S
            if pending:
                try:
                    from distributed import wait

                    wait(pending, timeout=max(0.01, wait_s), return_when="FIRST_COMPLETED")
                except Exception:  # noqa: BLE001 (timeout)
                    pass

    def _collect(self, hosts: list[Host], deadline: float) -> None:
        while any(h.result is None and h.lost is None for h in hosts) and time.monotonic() < deadline:
            self._check_hosts(hosts)
            time.sleep(POLL_S)
        for h in hosts:
            if h.result is None and h.lost is None:
                h.lost = "no result before the deadline"

    # -- the merged document ------------------------------------------------------------------------------------
    def _document(self, hosts: list[Host], env: dict) -> tuple[dict, int]:
        cfg = self.cfg
        parts = [(n, h) for n, h in enumerate(hosts) if h.result is not None and "merge" in h.result]
        for h in hosts:
            if h.result is not None and "merge" not in h.result and h.lost is None:
                h.lost = h.result.get("error") or "no result"
        for _, h in parts:
            why = h.result["merge"]["incomplete"]
            if why and self.incomplete is None:
                self.incomplete = f"client host {h.name}: {why}"
        if any(h.lost for h in hosts) and self.incomplete is None:
            lost = next(h for h in hosts if h.lost)
            self.incomplete = f"client host {lost.name}: {lost.lost}"
        merged = merge_parts(replace(cfg, workers=cfg.workers * len(hosts)), [h.result["merge"] for _, h in parts],
                             self.incomplete, lambda m: None)
        doc = merged.document(env, (), cfg.server_cpus, cfg.server_pid, cfg.host, cfg.port, None)
        self._cpu(doc, hosts)
        doc["hosts"] = [self._host_entry(h, n, doc) for n, h in enumerate(hosts)]
        # the coordinator runs no engine: what the hosts ran (each host's own in hosts[])
        engines = {e["engine"] for e in doc["hosts"] if e.get("engine")}
        doc["result"]["engine"].update(name=engines.pop() if len(engines) == 1 else "mixed" if engines else "none",
                                       note="per host, in hosts[]")
        doc["cluster"] = {"scheduler": cfg.cluster, "run_id": self.run_id, "hosts": len(hosts),
                          "max_clock_offset_ms": cfg.max_clock_offset * 1e3,
                          "note": "one host per Dask worker; counts and histograms merged exactly, the timeline by "
                                  "absolute second, times on the coordinator's clock"}
        doc["pinning"]["loadgen_cpus"] = None  # per host, in hosts[]
        doc["config"] = cfg.as_dict()  # --workers as given: processes on each host
        return doc, exit_code(doc["result"])

    def _cpu(self, doc: dict, hosts: list[Host]) -> None:
        res = doc["result"]
        cpu = res["cpu"]
        sides = []
        for h in hosts:
            side = (h.result or {}).get("merge", {}).get("client_cpu")
            if side:
                sides.append((h, stats.SideCpu(side["seconds"], side["busiest_process"], side["cpus"]), side["wall_s"]))
        server_side = None
        wall = None
        if getattr(self, "cpu0", None) and getattr(self, "cpu1", None):
            from ..target import cpu_delta

            (s0, t0), (s1, t1) = self.cpu0, self.cpu1
            wall = t1 - t0  # monotonic seconds
            s_total, s_busiest = cpu_delta(s0, s1)
            ncpu = len(self.cfg.server_cpus) if self.cfg.server_cpus else len(os.sched_getaffinity(0))
            server_side = stats.SideCpu(s_total, s_busiest, ncpu)
            if wall > 0:
                cpu.update(server_pct=round(s_total / wall * 100, 1), server_cpu_s=round(s_total, 3),
                           server_us_per_msg=stats.per_msg_us(s_total, res["messages"]),
                           server_busiest_pct=round(s_busiest / wall * 100, 1))
        if not sides:
            return
        c_total = sum(s.seconds for _, s, _ in sides)
        host_wall = max(w for _, _, w in sides)
        wall = wall or host_wall
        cpu.update(loadgen_cpu_s=round(c_total, 3), loadgen_us_per_msg=stats.per_msg_us(c_total, res["messages"]),
                   loadgen_pct=round(c_total / host_wall * 100, 1) if host_wall > 0 else None,
                   loadgen_busiest_pct=round(max(s.busiest_process / w for _, s, w in sides if w > 0) * 100, 1),
                   window_s=round(wall, 3),
                   note="loadgen_pct sums every host's processes (100 = one CPU); loadgen_busiest_pct is the busiest "
                        "process on any host")
        res["verdict"], res["verdict_detail"] = cluster_verdict(sides, server_side, socket.gethostname())
        self.machine_busy = {n: side.utilisation(w) for _m, names, side, w in machines_of(sides) for n in names}

    def _host_entry(self, h: Host, n: int, doc: dict) -> dict:
        entry = {"address": h.addr, "name": h.name, "ip": h.ip,
                 "connections": {"requested": len(h.conn_ids), "established": None},
                 "messages": None, "msgs_per_s": None, "workers": self.cfg.workers, "cpu": None,
                 "verdict": None, "verdict_detail": None,
                 "clock_offset_us": round(h.offset_ns / 1e3, 1), "clock_uncertainty_us": round(h.rtt_ns / 2e3, 1),
                 "echobench": {k: (h.identity or {}).get(k) for k in ("version", "code", "python", "hostname")},
                 "complete": False, "incomplete_reason": h.lost}
        hd = (h.result or {}).get("doc")
        if hd is not None:
            r = hd["result"]
            machine = getattr(self, "machine_busy", {}).get(h.name)
            saturated = r["verdict"] in stats.CLIENT_SATURATED or (machine is not None and machine >= stats.BUSY)
            duration = doc["result"]["duration_s"]
            entry.update(connections=r["connections"], messages=r["messages"],
                         msgs_per_s=round(r["messages"] / duration, 1) if duration else None,
                         loadgen_cpus=hd["pinning"]["loadgen_cpus"], engine=hd["config"]["engine"],
                         cpu={k: r["cpu"].get(k) for k in ("loadgen_pct", "loadgen_busiest_pct", "loadgen_us_per_msg",
                                                            "loadgen_cpu_s", "loadgen_wait_pct", "window_s")},
                         verdict="client-bound" if saturated else "headroom",
                         verdict_detail=(f"the load generator on this host was {_busy(h):.0%} busy"
                                         + (f", its machine {machine:.0%} with the hosts beside it" if machine is not None
                                            and abs(machine - _busy(h)) > 0.005 else "")
                                         + (": this host's share measures the load generator, not the server"
                                            if saturated else "")),
                         complete=r["complete"],
                         incomplete_reason=r["incomplete_reason"] or h.lost,
                         errors=r["errors"], integrity_failures=r["integrity_failures"])
        return entry


def machines_of(sides: list) -> list[tuple[str, list[str], "stats.SideCpu", float]]:
    """(machine, its hosts' names, one SideCpu for them all, window) per machine. Hosts on one machine (the same
    hostname: Dask workers started together, a LocalCluster, network namespaces) share its CPUs, so they are
    one side, over the CPUs they were pinned to."""
    machines: dict[str, list] = {}
    for h, side, w in sides:
        machines.setdefault((h.identity or {}).get("hostname") or h.addr, []).append((h, side, w))
    out = []
    for name, group in machines.items():
        cpus: set[int] = set()
        for h, _s, _w in group:
            cpus |= set((((h.result or {}).get("doc") or {}).get("pinning") or {}).get("loadgen_cpus") or ())
        n_cpus = len(cpus) or sum(s.cpus for _h, s, _w in group)
        side = stats.SideCpu(sum(s.seconds for _h, s, _w in group), max(s.busiest_process for _h, s, _w in group), n_cpus)
        out.append((name, [h.name for h, _s, _w in group], side, max(w for _h, _s, w in group)))
    return out


def cluster_verdict(sides: list, server: "stats.SideCpu | None", here: str) -> tuple[str, str]:
    """The verdict of a cluster run, which must not flatter. ``sides``: (host, its load generator's SideCpu, its
    window in s) per client host. The busiest machine (``machines_of``) is the client side. A client host on the
    server's own machine (the server runs here, on ``here``) competes with it for CPUs: such a cell is never
    ``server-bound``."""
    judged = machines_of(sides)
    name, names, side, wall = max(judged, key=lambda x: x[2].utilisation(x[3]))
    verdict, detail = stats.verdict(side, server, wall)
    who = f"client host {names[0]}" if len(names) == 1 else f"client hosts {', '.join(names)}, one machine ({name})"
    if len(sides) > 1 or len(names) > 1:
        detail = f"{detail} (the busiest: {who})"
    shared = [n for n, _names, _s, _w in judged if n == here]
    if server is not None and shared and verdict == "server-bound":
        verdict = "both-saturated"
        detail += (f"; client hosts run on the server's own machine ({here}) and compete with it for its CPUs, so "
                   "this is not ranked as server-bound")
    return verdict, detail


def _busy(h: Host) -> float:
    side = h.result["merge"]["client_cpu"]
    if not side:
        return 0.0
    return stats.SideCpu(side["seconds"], side["busiest_process"], side["cpus"]).utilisation(side["wall_s"])


def merge_parts(cfg: LoadConfig, parts: list[dict], incomplete: str | None, log) -> Runner:
    """A Runner holding every host's intervals and finals (keys (host, worker)), ready for ``Runner.document``: the same
    exact merge a single host does over its own workers."""
    m = Runner(cfg, log)
    m.incomplete = incomplete
    for n, part in enumerate(parts):
        for i, w, rep in part["intervals"]:
            m.intervals.setdefault(i, {})[(n, w)] = rep
        for w, f in part["finals"]:
            m.finals[(n, w)] = f
        m.connect_ns += part["connect_ns"]
        if part["warm_t_ns"] is not None:
            m.warm_t_ns = part["warm_t_ns"] if m.warm_t_ns is None else min(m.warm_t_ns, part["warm_t_ns"])
    return m
