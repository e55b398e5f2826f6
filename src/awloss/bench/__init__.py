"""``awloss bench``: compare multi-task methods on real and synthetic data (optional extra ``awloss[bench]``).

Run ``awloss bench --list`` for the datasets and methods, ``awloss bench --help`` for the options.
"""

from .deltam import delta_m, mean_rank

__all__ = ["delta_m", "mean_rank"]
