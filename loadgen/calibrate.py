"""Moved to ``loadgen.suite.calibrate``: this name stays for old imports and ``python -m loadgen.calibrate``."""

import sys

from loadgen.suite import calibrate as _moved

if __name__ == "__main__":
    sys.exit(_moved.main())
else:
    sys.modules[__name__] = _moved
