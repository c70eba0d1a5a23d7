"""Moved to ``loadgen.modes.cluster``: this name stays for old imports."""

import sys

from loadgen.modes import cluster as _moved

sys.modules[__name__] = _moved
