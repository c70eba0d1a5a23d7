"""Moved to ``loadgen.modes.hostagent``: this name stays for old imports and ``python -m loadgen.hostagent``."""

import sys

from loadgen.modes import hostagent as _moved

if __name__ == "__main__":
    sys.exit(_moved.main())
else:
    sys.modules[__name__] = _moved
