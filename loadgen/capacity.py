"""Moved to ``loadgen.modes.capacity``: this name stays for old imports."""

import sys

from loadgen.modes import capacity as _moved

sys.modules[__name__] = _moved
