"""Dask schedulers and workers as real processes for the --cluster tests: started with Dask's own commands
(``python -m dask scheduler``, ``python -m dask worker``), optionally inside a network namespace, each waited
for by the line it logs when ready, and stopped at the end.

    python tests/support/dask_procs.py local N    a LocalCluster of N worker processes: prints its address, runs until
                                          stdin closes
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

READY_TIMEOUT_S = 60.0


class DaskProc:
    """A process whose stderr is read line by line; ``wait_for(regex)`` returns the first match."""

    def __init__(self, argv: list[str], env: dict | None = None, netns: str | None = None, stdin=subprocess.DEVNULL) -> None:
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        self.argv = argv
        # cwd /: Python puts the working directory first on sys.path, which would shadow a worker's PYTHONPATH
        self.proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     start_new_session=True, cwd="/")
        self.lines: list[str] = []
        self.out: list[str] = []
        self._cond = threading.Condition()
        for stream, sink in ((self.proc.stderr, self.lines), (self.proc.stdout, self.out)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    def _read(self, stream, sink) -> None:
        for raw in stream:
            with self._cond:
                sink.append(raw.decode(errors="replace"))
                self._cond.notify_all()
        with self._cond:
            sink.append("")  # end of output
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = READY_TIMEOUT_S, stdout: bool = False) -> re.Match:
        rx = re.compile(pattern)
        sink = self.out if stdout else self.lines
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in sink[seen:]:
                    if m := rx.search(line):
                        return m
                    if line == "":
                        raise RuntimeError(f"{self.argv[:6]} ended before {pattern!r}: {self.tail()}")
                seen = len(sink)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.argv[:6]}: no {pattern!r} within {timeout:g} s: {self.tail()}")
                self._cond.wait(left)

    def tail(self, n: int = 8) -> str:
        return " | ".join(x.strip() for x in self.lines[-n:] if x.strip())

    def kill(self) -> None:
        """SIGKILL for the process and its session, and wait for it."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        else:  # the session may still hold children (a worker's load-generator agent)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _tls_args(tls) -> list[str]:
    """(ca, cert, key) PEM files -> Dask's command-line options for TLS."""
    if not tls:
        return []
    ca, cert, key = tls
    return ["--tls-ca-file", str(ca), "--tls-cert", str(cert), "--tls-key", str(key)]


def scheduler(host: str = "127.0.0.1", netns: str | None = None, port: int = 0, tls=None) -> tuple[DaskProc, str]:
    argv = [sys.executable, "-m", "dask", "scheduler", "--host", host, "--port", str(port), "--no-dashboard"]
    if tls:
        argv += ["--protocol", "tls", *_tls_args(tls)]
    p = DaskProc(argv, netns=netns)
    m = p.wait_for(r"Scheduler at:\s+(\S+)")
    return p, m.group(1)


def worker(address: str, name: str, host: str | None = None, netns: str | None = None, env: dict | None = None,
           nanny: bool = False, python: str = sys.executable, tls=None) -> DaskProc:
    argv = [python, "-m", "dask", "worker", address, "--name", name, "--nthreads", "1", "--nworkers", "1",
            "--no-dashboard", "--death-timeout", "60", *_tls_args(tls)]
    if host:
        argv += ["--host", host]
    if not nanny:
        argv.append("--no-nanny")
    p = DaskProc(argv, env=env, netns=netns)
    p.wait_for(r"Registered to:")
    return p


def _local(n: int) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as c:
        print(c.scheduler_address, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "local":
        _local(int(sys.argv[2]))
    else:
        sys.exit(__doc__)
