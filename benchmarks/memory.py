"""IDE training memory at T = 10, 30, 100 (the core issue's check; target T=100 / T=10 <= 1.10).

    python benchmarks/memory.py

The same measurement as `memory_vs_T.py` (see there), restricted to IDE on the conv model.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from memory_vs_T import main  # noqa: E402

if __name__ == "__main__":
    main(["--models", "conv", "--gradients", "ide", "--time-steps", "10", "30", "100", "--plot", ""])
