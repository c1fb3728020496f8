"""Run the zactor benchmark: ``python bench/run_bench.py [--quick] [--json PATH] ...``.

The same as ``zactor bench`` / ``python -m zactor bench`` (see ``zactor/bench.py``).
"""

import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from zactor.benchmark.runner import main

    sys.exit(main())
