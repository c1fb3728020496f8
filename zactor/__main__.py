"""``python -m zactor``: the same command line as the ``zactor`` script."""

import sys

from zactor.cli import main

if __name__ == "__main__":
    sys.exit(main())
