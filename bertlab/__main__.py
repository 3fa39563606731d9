"""``python -m bertlab ...`` (and ``torchrun ... -m bertlab fit ...``): the ``bertlab`` command."""

import sys

from bertlab.cli import main

if __name__ == "__main__":
    sys.argv[0] = "bertlab"  # usage lines say `bertlab`, not `__main__.py`
    sys.exit(main())
