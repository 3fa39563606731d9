"""``bertlab`` (the console script), ``python -m bertlab ...`` and ``torchrun ... -m bertlab fit ...``.

The allocator is chosen first (``bertlab.allocator``: this process may be re-executed with tcmalloc
preloaded), before ``bertlab.cli`` imports torch.
"""

import sys

from bertlab.allocator import preload_and_reexecute


def main() -> int:
    preload_and_reexecute()
    from bertlab.cli import main as cli_main

    sys.argv[0] = "bertlab"  # usage lines say `bertlab`, not `__main__.py`
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
