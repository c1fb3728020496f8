"""Run the zactor benchmark: ``python bench/run_bench.py [--quick] [--nodes 2] [--json PATH] ...``.

The same as ``zactor bench`` / ``python -m zactor bench`` (see
``zactor/benchmark/runner.py``, and ``zactor/benchmark/nodes.py`` for ``--nodes``).
"""

import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from zactor.cli import main

    sys.exit(main(["bench", *sys.argv[1:]]))
