"""Worker memory under floods: ``python bench/flood_rss.py`` (see BENCHMARKS.md).

The bench lives in the package (``zactor.benchmark.flood``) because the test
suite sends its malformed frames too; this is its entry point beside the other
benchmarks. Options: ``--frames N``, ``--tells N``, ``--tell-bytes N``,
``--call-us US``.
"""

import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from zactor.benchmark.flood import main

    main()
