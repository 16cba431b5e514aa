"""``python -m scmulan``: the same as the ``scmulan`` command."""

import sys

from scmulan.cli import main

if __name__ == "__main__":
    sys.exit(main())
