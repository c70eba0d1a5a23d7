"""Moved to ``loadgen.suite.compare``: this name stays for old imports and ``python -m loadgen.compare``."""

import sys

from loadgen.suite import compare as _moved

if __name__ == "__main__":
    sys.exit(_moved.main())
else:
    sys.modules[__name__] = _moved
