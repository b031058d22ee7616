"""Full benchmark: every installed variant on cases (a), (b), (c), small and tiny.

    python bench/run.py                         # writes bench/results.{md,json,png}
    python bench/run.py --cases a,b,c,tiny      # every ratio the performance targets name
    python bench/run.py --cases c --steps 50
    python bench/run.py --cases b --paired --repeats 5 \
        --variants "torch AdamW fused,anyoptim torch update"   # one library, paired

The per-case tables are followed by a targets table (also under "targets" in results.json).

See src/anyoptim/benchmark/ for what is measured and how.
"""

import sys

from anyoptim.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
