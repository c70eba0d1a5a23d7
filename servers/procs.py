"""Process lifecycle facts that servers and the load generator share (one copy each).

``servers`` imports nothing from ``loadgen`` (an A/B run copies ``servers/`` alone), so this lives here and the
load generator imports it from here.
"""

from __future__ import annotations

import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies, however it dies (prctl PR_SET_PDEATHSIG;
    set after exec, never in a fork hook of a possibly threaded parent; it survives an exec). Returns False when
    ``parent`` is given and is no longer this process's parent (it died before the request took effect), True
    otherwise; where prctl is missing (not Linux) nothing is requested and the caller's other way of noticing its
    parent's end (a pipe's EOF, the parent's own stop) is all there is."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    return parent is None or os.getppid() == parent
