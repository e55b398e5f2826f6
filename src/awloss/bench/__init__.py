"""``awloss bench``: which multi-task method for *your* data (optional extra ``awloss[bench]``).

From a shell: ``awloss bench --dataset table:data.csv --targets y1,y2 --seeds 3`` (``awloss bench --help``).
From Python::

    from awloss import bench
    res = bench.run(bench.table("data.csv", targets=["y1", "y2"]), methods=["ew", "uw", "famo"], seeds=3)
    print(res)  # the table, ending with the Recommendation: line

Your own dataset: subclass :class:`DatasetSpec` (its docstring is the protocol) and pass an instance, or
``--dataset package.module:factory`` for a function returning one.
"""

from .api import DEFAULT_METHODS, Interrupted, Results, run
from .datasets import BenchError, Data, DatasetSpec, Metric, Split
from .datasets.table import TableDataset, table
from .deltam import delta_m, mean_rank

__all__ = ["run", "Results", "table", "TableDataset", "DatasetSpec", "Data", "Split", "Metric", "BenchError",
           "Interrupted", "DEFAULT_METHODS", "delta_m", "mean_rank"]
