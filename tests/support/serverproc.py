"""Start a server model as a real process and watch it: ready line, stderr, CPU, memory."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from servers.net import read_ready_line

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 20.0
# The servers promise to stop within 2 s of SIGINT/SIGTERM, by their own budgets (a stalled writer is given up
# on after about 1 s). A test does not assert that time: a loaded machine can stretch any process's exit. It
# waits up to this deadline, which only a server that hangs on shutdown (ignores the signal, blocks on a peer)
# exceeds.
STOP_DEADLINE_S = 15.0


class ServerProcess:
    """``python -m servers MODEL --port 0 ...`` with its ready line read back."""

    def __init__(self, model: str, *args: str, preexec_fn=None, argv: list[str] | None = None) -> None:
        self.model = model
        where = [] if "unix" in args else ["--port", "0"]  # --transport unix takes --path instead
        self.argv = argv or [sys.executable, "-m", "servers", model, *where, *args]
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=preexec_fn,
        )
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.addr = self._wait_ready()
        self.host, self.port = self.addr  # for a Unix socket: (path, None)

    # -- start-up -------------------------------------------------------------
    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            with self._cond:
                self._lines.append(raw.decode(errors="replace"))
                self._cond.notify_all()
        with self._cond:
            self._lines.append("")  # EOF marker
            self._cond.notify_all()

    def _wait_ready(self) -> tuple[str, int]:
        try:
            return read_ready_line(self.proc.stdout, READY_TIMEOUT_S)
        except TimeoutError:
            self.kill()
            raise AssertionError(f"{self.model}: no ready line in {READY_TIMEOUT_S} s; stderr:\n{self.stderr}") from None
        except EOFError:
            self.proc.wait(5)
            raise AssertionError(f"{self.model}: exited {self.proc.returncode} before ready; stderr:\n{self.stderr_after_exit()}") from None

    # -- observation ----------------------------------------------------------
    @property
    def stderr(self) -> str:
        with self._cond:
            return "".join(self._lines)

    def stderr_after_exit(self, timeout: float = 5.0) -> str:
        self._reader.join(timeout)
        return self.stderr

    def wait_for_stderr(self, pattern: str, timeout: float) -> re.Match:
        """Block until a stderr line matches ``pattern``; fail after ``timeout``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for line in self._lines[seen:]:
                    if m := rx.search(line):
                        return m
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self._lines and self._lines[-1] == ""):
                    raise AssertionError(f"{self.model}: no stderr line matching {pattern!r}; stderr:\n{''.join(self._lines)}")
                self._cond.wait(left)

    def processes(self) -> list[psutil.Process]:
        """The server and all its worker processes."""
        parent = psutil.Process(self.proc.pid)
        return [parent, *parent.children(recursive=True)]

    def rss(self) -> int:
        total = 0
        for p in self.processes():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.processes():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, f"{self.model} died with {self.proc.returncode}; stderr:\n{self.stderr}"

    # -- shutdown -------------------------------------------------------------
    def stop(self, sig: int = signal.SIGTERM) -> tuple[int | None, float, list[int]]:
        """Send ``sig``; return (exit code or None if it outlived the deadline, seconds, pids left alive)."""
        procs = self.processes() if self.proc.poll() is None else []
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            rc = None
        elapsed = time.monotonic() - t0
        _gone, alive = psutil.wait_procs(procs[1:], timeout=5)
        leftover = [p.pid for p in alive]
        self.kill()
        return rc, elapsed, leftover

    def kill(self) -> None:
        """Last resort: SIGKILL the server and its workers (by PID, only ours)."""
        try:
            procs = self.processes()
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f and not f.closed:
                f.close()
