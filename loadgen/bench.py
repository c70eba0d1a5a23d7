"""Moved to ``loadgen.suite.bench``: this name stays for old imports and ``python -m loadgen.bench``."""

import sys

from loadgen.suite import bench as _moved

if __name__ == "__main__":
    sys.exit(_moved.main())
else:
    sys.modules[__name__] = _moved
