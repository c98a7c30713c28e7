"""``python -m bundle``: see :mod:`bundle.cli`."""

import sys

from bundle.cli import main

if __name__ == "__main__":
    sys.exit(main())
