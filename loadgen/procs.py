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
