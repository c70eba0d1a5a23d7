"""Small facts about processes that several layers need (the runner, the A/B worktrees)."""

from __future__ import annotations

import os


def pid_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists (one we may not signal counts: it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def interrupt(signum, frame):
    """A SIGTERM handler that turns the signal into Ctrl-C (KeyboardInterrupt), so a run stopped by its caller
    (a CI cancel, ``kill``) cleans up and keeps what it measured exactly as Ctrl-C does."""
    raise KeyboardInterrupt


def process_cpu_ns(pid: int, children: bool = True) -> int:
    """CPU time (user + kernel) of process ``pid`` in nanoseconds, every thread included, those that already
    exited too, and with ``children`` its live descendants (a multi-process server's workers).

    Read from the process's CPU-time clock (``clock_getcpuclockid``: clock id ``(~pid << 3) | 2``), which the
    kernel keeps to the nanosecond: ``/proc/PID/stat`` counts clock ticks (10 ms, too coarse for a 0.5 s slice)
    and ``/proc/PID/schedstat`` covers one thread only (a thread-per-connection server's work is in threads
    that end with their connection). Raises ProcessLookupError when ``pid`` is gone."""
    import time

    pids = [pid]
    if children:
        import psutil

        try:
            pids += [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            raise ProcessLookupError(pid) from None
    total = 0
    for i, p in enumerate(pids):
        try:
            total += time.clock_gettime_ns(((~p) << 3) | 2)
        except OSError:
            if i == 0:
                raise ProcessLookupError(pid) from None
            # a child that ended between the listing and the read: a server's worker died, which the caller sees
    return total
