"""Full benchmark: every installed variant on cases (a), (b), (c) and the 10-tensor case.

    python bench/run.py                 # writes bench/results.{md,json,png}
    python bench/run.py --cases c --steps 50

See src/anyoptim/benchmark.py for what is measured and how.
"""

import sys

from anyoptim.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
