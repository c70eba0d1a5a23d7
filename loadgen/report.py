"""Moved to ``loadgen.suite.report``: this name stays for old imports and ``python -m loadgen.report``."""

import sys

from loadgen.suite import report as _moved

if __name__ == "__main__":
    sys.exit(_moved.main())
else:
    sys.modules[__name__] = _moved
