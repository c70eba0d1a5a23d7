"""Moved to ``loadgen.suite.cost``: this name stays for old imports and ``python -m loadgen.cost``."""

import sys

from loadgen.suite import cost as _moved

if __name__ == "__main__":
    sys.exit(_moved.main())
else:
    sys.modules[__name__] = _moved
