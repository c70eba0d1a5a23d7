"""The server side of a run: start a registry model (pinned) or watch an external PID."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile

import psutil

from servers.cli import PARENT_ENV
from servers.net import read_ready_line

from .envinfo import ROOT

READY_TIMEOUT_S = 30.0


class TargetError(Exception):
    """The server could not be started or found: one line for the user."""


class ManagedServer:
    """``python -m servers MODEL --port 0`` in its own session (Ctrl-C is ours to handle), pinned."""

    def __init__(self, model: str, host: str, workers: int | None, cpus: tuple[int, ...] | None,
                 extra: tuple[str, ...] = (), transport: str = "tcp", path: str | None = None,
                 root=None, python: str | None = None) -> None:
        """``root``: the tree whose ``servers`` package runs (default this checkout; an A/B run's base or head).
        ``python``: the interpreter that runs it (default this one; a variant's, loadgen/suite/variants.py), with
        ``root`` (or this checkout) on its path, so its own site-packages supply uvloop, gevent and trio."""
        self.tmpdir = None
        if transport == "unix":
            if path is None:  # a private folder: nobody else's file can be in the way
                self.tmpdir = tempfile.mkdtemp(prefix="echobench-")
                path = os.path.join(self.tmpdir, "echo.sock")
            where = ["--transport", "unix", "--path", path]
        else:
            where = ["--transport", transport, "--host", host, "--port", "0"]
        argv = [python or sys.executable, "-m", "servers", model, *where, *extra]
        if workers is not None:
            argv += ["--workers", str(workers)]
        self.stderr = tempfile.TemporaryFile()
        pin = (lambda: os.sched_setaffinity(0, set(cpus))) if cpus else None
        env = {**os.environ, PARENT_ENV: str(os.getpid())}  # it stops when we die, even by SIGKILL
        if root is not None or python is not None:
            env["PYTHONPATH"] = str(root or ROOT)
        self.proc = subprocess.Popen(
            argv, cwd=root or ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr,
            preexec_fn=pin, start_new_session=True, env=env,
        )
        self.model = model
        self.addr = self._wait_ready()

    def _wait_ready(self) -> tuple[str, int | None]:
        try:
            return read_ready_line(self.proc.stdout, READY_TIMEOUT_S)
        except TimeoutError:
            self.stop()
            raise TargetError(f"server {self.model} printed no ready line in {READY_TIMEOUT_S:.0f} s: {self.stderr_tail()}") from None
        except EOFError:
            self.proc.wait(5)
            self._remove_tmpdir()
            raise TargetError(f"server {self.model} exited with code {self.proc.returncode} before it was ready: {self.stderr_tail()}") from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, lines: int = 5) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) if text else "(no stderr)"

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(3)
        self.proc.stdout.close()
        self._remove_tmpdir()
        return self.proc.returncode

    def _remove_tmpdir(self) -> None:
        """The private folder of a Unix socket we chose (the server removed the socket itself)."""
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


class CpuSampler:
    """CPU seconds of a set of processes (and, optionally, their descendants), per PID."""

    def __init__(self, pids: list[int], children: bool) -> None:
        self.roots = []
        for pid in pids:
            try:
                self.roots.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        self.children = children

    def _processes(self) -> list:
        """The root processes, and with ``children`` their live descendants."""
        procs = list(self.roots)
        if self.children:
            for r in self.roots:
                try:
                    procs += r.children(recursive=True)
                except psutil.NoSuchProcess:
                    pass
        return procs

    def sample(self) -> dict[int, float]:
        out = {}
        for p in self._processes():
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return out

    def rss(self) -> int | None:
        """Resident memory of the processes (descendants included when ``children``), bytes; None if none is
        left."""
        total, seen = 0, False
        for p in self._processes():
            try:
                total += p.memory_info().rss
                seen = True
            except psutil.NoSuchProcess:
                pass
        return total if seen else None

    def waits(self) -> dict[int, float]:
        """Seconds each process has spent runnable but waiting for a CPU (``/proc/PID/schedstat``'s run delay;
        absent where the kernel does not keep it): a process that wants to run and cannot is starved, which its
        own CPU time does not show."""
        out = {}
        for p in self.roots:
            try:
                with open(f"/proc/{p.pid}/schedstat") as f:
                    out[p.pid] = int(f.read().split()[1]) / 1e9
            except (OSError, ValueError, IndexError):
                pass
        return out


def cpu_delta(a: dict[int, float], b: dict[int, float]) -> tuple[float, float]:
    """(total seconds, busiest single process seconds) between two samples."""
    deltas = [b[pid] - a.get(pid, 0.0) for pid in b]
    return (sum(deltas), max(deltas, default=0.0))
