"""Moved to ``loadgen.modes.idle``: this name stays for old imports."""

import sys

from loadgen.modes import idle as _moved

sys.modules[__name__] = _moved
