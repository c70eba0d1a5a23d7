"""loadgen/run.py --cluster: load from several client hosts (Dask workers), merged exactly.

Real Dask schedulers and workers (Dask's own commands, or a LocalCluster), real servers, real sockets. The
network-namespace test builds three hosts with their own addresses (root only; skipped with the reason
elsewhere). The merge on known data and the cluster's verdict: unit/test_cluster.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import psutil
import pytest
from test_loadgen import QUICK, RUN, assert_one_line_error, loadgen

from loadgen import stats
from loadgen.modes import cluster

from conftest import ROOT_DIR
from support.dask_procs import DaskProc, scheduler, worker
from support.netns_hosts import NetnsHosts, unavailable_reason
from support.serverproc import ServerProcess

try:
    import distributed  # noqa: F401
except ImportError:  # in CI (CI=true) the extra is installed by make venv: a missing one fails instead
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("Dask distributed is not installed (pip install 'echobench[cluster]')", allow_module_level=True)

SUPPORT = ROOT_DIR / "tests" / "support"
# Every host here is this machine, so their clocks are one clock; a loaded machine can still make every round trip
# through the scheduler slow, and the default 10 ms bound would then refuse a host (tested on its own below).
CLOCK = ["--max-clock-offset", "1"]


def _echoed(server) -> tuple[int, dict[str, int]]:
    """A count server's bytes echoed and connections by client address, read after SIGTERM."""
    server.proc.send_signal(signal.SIGTERM)
    echoed = int(server.proc.stdout.readline().split()[1])
    peers = dict(x.split("=") for x in server.proc.stdout.readline().decode().split()[1:])
    return echoed, {a: int(n) for a, n in peers.items()}


@pytest.fixture(scope="module")
def local_cluster():
    """A Dask LocalCluster of two worker processes on this machine: two client hosts that share its CPUs."""
    p = DaskProc([sys.executable, str(SUPPORT / "dask_procs.py"), "local", "2"], stdin=subprocess.PIPE)
    try:
        addr = p.wait_for(r"(tcp://\S+)", stdout=True).group(1)
        yield addr
    finally:
        try:
            p.proc.stdin.close()
        except OSError:
            pass
        p.stop()


@pytest.fixture
def dask_cluster():
    """``start(workers=2, env=None)``: a scheduler and no-nanny workers started with ``python -m dask``; all
    stopped at teardown. Returns (address, [worker processes])."""
    procs: list[DaskProc] = []

    def start(workers: int = 2, env: dict | None = None, python: str = sys.executable):
        s, addr = scheduler()
        procs.append(s)
        ws = []
        for i in range(workers):
            ws.append(worker(addr, f"h{i + 1}", env=env, python=python))
            procs.append(ws[-1])
        return addr, ws

    yield start
    for p in reversed(procs):
        p.stop()


# -- runs on a cluster -------------------------------------------------------------------------------------------

def test_a_local_cluster_run_counts_what_the_server_echoed(tmp_path, local_cluster, fault_server):
    s = fault_server("count")
    out, doc = loadgen(tmp_path, "--cluster", local_cluster, "--port", str(s.port), "--conns", "8", "--size", "100",
                       *QUICK, *CLOCK)
    assert out.returncode == 0, out.stderr
    echoed, peers = _echoed(s)
    r = doc["result"]
    assert echoed == r["messages_total"] * 100
    assert sum(peers.values()) == 8
    assert r["complete"] and r["connections"] == {"requested": 8, "established": 8}
    assert stats.merge([r["histogram"]]).get_total_count() == r["messages"]  # one sample per measured echo
    hosts = doc["hosts"]
    assert len(hosts) == 2 and doc["cluster"]["hosts"] == 2
    assert sum(h["messages"] for h in hosts) == r["messages"]
    for h in hosts:
        assert h["complete"] and h["connections"] == {"requested": 4, "established": 4}
        assert h["messages"] > 0 and h["cpu"]["loadgen_us_per_msg"] > 0
        assert h["verdict"] in ("headroom", "client-bound") and h["echobench"]["code"]
        # one machine, one clock: the offset found is within the half round trip it claims as its uncertainty
        assert abs(h["clock_offset_us"]) <= h["clock_uncertainty_us"] + 0.1
    assert r["fairness"]["connections"] == 8
    assert r["cpu"]["loadgen_cpu_s"] == pytest.approx(sum(h["cpu"]["loadgen_cpu_s"] for h in hosts), abs=0.002)
    assert "client hosts" in out.stdout


def test_a_cluster_run_starts_its_own_tls_server_and_ships_its_authority(tmp_path, local_cluster):
    out, doc = loadgen(tmp_path, "--cluster", local_cluster, "--server", "asyncio-protocol", "--tls", "--conns", "4",
                       *QUICK, *CLOCK)
    assert out.returncode == 0, out.stderr
    r = doc["result"]
    assert r["complete"] and r["integrity_failures"] == 0 and r["messages"] > 0
    assert r["cpu"]["server_us_per_msg"] > 0  # the server runs here: its CPU is measured here
    assert all(h["engine"] == "python" for h in doc["hosts"])


@pytest.mark.parametrize("args, words", [
    (["--max-clock-offset", "0"], ["clock", "--max-clock-offset"]),  # no clock is known to within 0 ms
    (["--cluster-workers", "nobody"], ["no Dask worker 'nobody'"]),
    (["--conns", "1"], ["fewer than the 2 client hosts"]),
    (["--host", "127.0.0.1", "--transport", "unix", "--path", "/tmp/x.sock"], ["Unix socket"]),
])
def test_refusals_before_any_traffic(tmp_path, local_cluster, fault_server, args, words):
    s = fault_server("count")
    argv = ["--cluster", local_cluster, "--port", str(s.port), *QUICK, *args]
    if "--conns" not in args:
        argv += ["--conns", "4"]
    out, doc = loadgen(tmp_path, *argv)
    assert out.returncode == 2, out.stderr
    assert_one_line_error(out)
    for w in words:
        assert w in out.stderr
    assert doc is None
    assert _echoed(s) == (0, {})  # not one connection


def test_a_tls_scheduler_and_workers_carry_the_run(tmp_path, fault_server):
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    files = {}
    for who in ("scheduler", "worker", "client"):
        cert = ca.issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / f"{who}.pem"))
        cert.private_key_pem.write_to_path(str(tmp_path / f"{who}.key"))
        files[who] = (tmp_path / "ca.pem", tmp_path / f"{who}.pem", tmp_path / f"{who}.key")
    s, addr = scheduler(tls=files["scheduler"])
    w = None
    try:
        assert addr.startswith("tls://")
        w = worker(addr, "h1", tls=files["worker"])
        srv = fault_server("count")
        out, doc = loadgen(tmp_path, "--cluster", addr, "--cluster-tls", ",".join(map(str, files["client"])),
                           "--port", str(srv.port), "--conns", "2", "--size", "100", *QUICK, *CLOCK)
        assert out.returncode == 0, out.stderr
        assert _echoed(srv)[0] == doc["result"]["messages_total"] * 100
        plain, _ = loadgen(tmp_path, "--cluster", "tcp://" + addr.split("://")[1], *QUICK)  # no plaintext way in
        assert plain.returncode == 2 and "cannot reach the Dask scheduler" in plain.stderr
    finally:
        for p in (w, s):
            if p is not None:
                p.stop()


def test_without_the_cluster_extra_cluster_says_which_to_install(tmp_path):
    code = ("import sys; sys.modules['distributed'] = None  # as if not installed\n"
            "from loadgen.run import main; sys.exit(main(['--cluster', 'tcp://127.0.0.1:8786']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT_DIR, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "echobench[cluster]" in out.stderr
    assert_one_line_error(out)


def test_an_unreachable_scheduler_is_one_line(tmp_path):
    import socket

    with socket.socket() as sk:  # a port nobody listens on
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    out, _ = loadgen(tmp_path, "--cluster", f"tcp://127.0.0.1:{port}", *QUICK)
    assert out.returncode == 2 and "cannot reach the Dask scheduler" in out.stderr
    assert_one_line_error(out)


def _worker_python(tmp, change: str | None) -> tuple[str, dict]:
    """(python, environment) for a worker on another echobench: this one's code with one line appended, on the
    worker's PYTHONPATH; or (change None) a Python that has Dask but no echobench at all: a fresh venv that sees
    this venv's packages through a path file, where the editable install's own path file is not read."""
    import site
    import sysconfig

    if change is not None:
        for d in ("loadgen", "servers"):
            shutil.copytree(ROOT_DIR / d, tmp / d, ignore=shutil.ignore_patterns("__pycache__"))
        with open(tmp / "loadgen" / "stats.py", "a") as f:
            f.write(change)
        return sys.executable, {**os.environ, "PYTHONPATH": str(tmp)}
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True, timeout=60)
    py = tmp / "venv" / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    ours = [p for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
            if os.path.isdir(p)]
    with open(os.path.join(purelib, "dask-only.pth"), "w") as f:
        f.write("\n".join(ours) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return str(py), env


@pytest.mark.parametrize("change, words", [
    ("\n# a different echobench\n", ["refused", "code", "install the same echobench on every host"]),
    (None, ["refused", "echobench is not installed there", "echobench[cluster]"]),
])
def test_a_worker_with_other_code_or_none_is_refused_before_traffic(tmp_path, dask_cluster, fault_server, change, words):
    python, env = _worker_python(tmp_path, change)
    addr, _ = dask_cluster(workers=1, env=env, python=python)
    s = fault_server("count")
    out, doc = loadgen(tmp_path, "--cluster", addr, "--port", str(s.port), "--conns", "4", *QUICK)
    assert out.returncode == 2, out.stderr
    assert_one_line_error(out)
    for w in words:
        assert w in out.stderr
    assert _echoed(s) == (0, {})


def test_a_killed_client_host_ends_the_run_incomplete_with_the_others_results(tmp_path, dask_cluster, fault_server):
    addr, (w1, w2) = dask_cluster(workers=2)
    s = fault_server("count")
    path = tmp_path / "r.json"
    run = DaskProc([*RUN, "--cluster", addr, "--port", str(s.port), "--conns", "8", "--size", "100", *CLOCK,
                    "--warmup", "0.5", "--duration", "60", "--json", str(path)])
    try:
        run.wait_for(r"loadgen: +[1-9]\d*\.\d/60\.5 s", timeout=90)  # measuring: a progress line past 1 s
        agents = [p for p in psutil.Process(w2.proc.pid).children(recursive=True)]
        w2.proc.kill()  # the host dies: no goodbye to the scheduler
        rc = run.proc.wait(90)  # the test's bound; the run stops the other host at once
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert rc == 3, run.tail()
    doc = json.loads(path.read_text())
    r = doc["result"]
    assert not r["complete"] and "h2" in r["incomplete_reason"] and "left the cluster" in r["incomplete_reason"]
    by_name = {h["name"]: h for h in doc["hosts"]}
    assert by_name["h2"]["complete"] is False and "left the cluster" in by_name["h2"]["incomplete_reason"]
    assert by_name["h1"]["messages"] > 0 and r["messages"] == by_name["h1"]["messages"]
    assert "stopped by the coordinator" in by_name["h1"]["incomplete_reason"]
    _gone, alive = psutil.wait_procs(agents, timeout=30)  # the dead host's load generator went with it
    assert not alive
    echoed, _ = _echoed(s)
    assert echoed >= r["messages_total"] * 100  # the dead host's echoes are not in the merged counts


def test_hosts_stop_on_their_own_when_the_coordinator_is_killed(tmp_path, dask_cluster, fault_server):
    addr, (w1,) = dask_cluster(workers=1)
    s = fault_server("count")
    # a silence of 3 s, not 15: the run would otherwise go on for two minutes
    run = DaskProc([*RUN, "--cluster", addr, "--port", str(s.port), "--conns", "2", *CLOCK, "--warmup", "0.5",
                    "--duration", "120"], env={**os.environ, cluster.BEAT_TIMEOUT_ENV: "3"})
    try:
        run.wait_for(r"loadgen: +[1-9]\d*\.\d/120\.5 s", timeout=90)
        agents = psutil.Process(w1.proc.pid).children(recursive=True)
        assert agents
        run.proc.kill()  # no stop, no goodbye: only its heartbeat stops
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    _gone, alive = psutil.wait_procs(agents, timeout=90)
    assert not alive


# -- three hosts of their own: network namespaces -----------------------------------------------------------------

@pytest.fixture
def netns_hosts():
    if why := unavailable_reason():
        pytest.skip(why)
    hosts = NetnsHosts(f"eb{os.getpid() % 100000}")
    try:
        hosts.up()
    except OSError as exc:
        pytest.skip(f"cannot make network namespaces here: {exc}")
    procs: list = []
    try:
        yield hosts, procs
    finally:
        for p in reversed(procs):
            p.stop()
        hosts.down()


def test_two_client_hosts_drive_a_server_on_a_third(tmp_path, netns_hosts):
    hosts, procs = netns_hosts
    s = ServerProcess("count@srv", argv=["ip", "netns", "exec", hosts.server, sys.executable,
                                         str(SUPPORT / "fault_server.py"), "count", "--host", hosts.server_ip])
    procs.append(s)
    sched, addr = scheduler(host=hosts.server_ip, netns=hosts.server)
    procs.append(sched)
    for i, (ns, ip) in enumerate(zip(hosts.clients, hosts.client_ips)):
        procs.append(worker(addr, f"client{i + 1}", host=ip, netns=ns))
    path = tmp_path / "r.json"
    out = subprocess.run(["ip", "netns", "exec", hosts.server, *RUN, "--cluster", addr, "--host", hosts.server_ip,
                          "--port", str(s.port), "--conns", "8", "--size", "100", *QUICK, *CLOCK, "--json", str(path)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT_DIR)
    assert out.returncode == 0, out.stderr
    doc = json.loads(path.read_text())
    echoed, peers = _echoed(s)
    r = doc["result"]
    assert echoed == r["messages_total"] * 100
    assert peers == {ip: 4 for ip in hosts.client_ips}  # each host's connections came from its own address
    assert sorted(h["ip"] for h in doc["hosts"]) == hosts.client_ips
    assert all(h["complete"] and h["messages"] > 0 for h in doc["hosts"])
    assert sum(h["messages"] for h in doc["hosts"]) == r["messages"]


# -- make bench from a cluster ------------------------------------------------------------------------------------

def test_make_bench_drives_its_matrix_from_a_cluster(tmp_path, local_cluster):
    matrix = tmp_path / "m.toml"
    matrix.write_text("""
[run]
trials = 1
duration = 0.5
warmup = 0.2
models = ["asyncio-protocol"]
reference = "asyncio-protocol"
spectrum_load = { conns = 2, size = 1024 }

[[sweep]]
name = "connections"
conns = [2, 4]
sizes = [1024]

[transports]
compare = ["tcp", "unix", "udp"]
conns = 2
size = 1024
""")
    out = subprocess.run([sys.executable, "-m", "loadgen.suite.bench", "--matrix", str(matrix), "--results",
                          str(tmp_path / "results"), "--cluster", local_cluster, "--server-host", "127.0.0.1", *CLOCK],
                         cwd=ROOT_DIR, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    run = (tmp_path / "results" / "latest").resolve()
    suite = json.loads((run / "suite.json").read_text())
    assert suite["cluster"]["address"] == local_cluster and "Unix-socket cells" in out.stderr
    assert sorted((c["transport"], c["conns"]) for c in suite["cells"]) == [("tcp", 2), ("tcp", 4), ("udp", 2)]
    for p in (run / "cells").glob("*.json"):
        doc = json.loads(p.read_text())
        assert len(doc["hosts"]) == 2 and doc["result"]["complete"]
        assert sum(h["messages"] for h in doc["hosts"]) == doc["result"]["messages"] > 0
    assert "Dask cluster" in (run / "report.md").read_text()


def test_bench_cluster_needs_a_server_address(tmp_path):
    out = subprocess.run([sys.executable, "-m", "loadgen.suite.bench", "--cluster", "tcp://127.0.0.1:1"], cwd=ROOT_DIR,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--server-host" in out.stderr and "Traceback" not in out.stderr


def test_a_lost_scheduler_ends_the_run_incomplete_in_one_line(tmp_path, fault_server):
    s, addr = scheduler()
    workers = []
    run = None
    try:
        workers = [worker(addr, f"h{i}") for i in (1, 2)]
        srv = fault_server("count")
        path = tmp_path / "r.json"
        run = DaskProc([*RUN, "--cluster", addr, "--port", str(srv.port), "--conns", "4", "--warmup", "0.5", *CLOCK,
                        "--duration", "60", "--json", str(path)])
        run.wait_for(r"loadgen: +[1-9]\d*\.\d/60\.5 s", timeout=90)
        s.proc.kill()
        rc = run.proc.wait(90)
    finally:  # workers without a scheduler would take their time over a clean stop
        for p in (run, *workers, s):
            if p is not None:
                p.kill()
    assert rc == 3
    err = [x for x in run.lines if x.strip() and not x.startswith("loadgen: ")]
    assert len(err) == 1 and "lost the Dask scheduler" in err[0], "".join(run.lines)
    doc = json.loads(path.read_text())
    assert not doc["result"]["complete"] and all(not h["complete"] for h in doc["hosts"])
