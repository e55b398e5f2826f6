"""``python -m awloss bench …``: the same as the ``awloss`` console script."""

import sys

from .bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
