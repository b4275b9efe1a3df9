"""Explain a whole data set: one Parquet row per image, on one machine or a Ray cluster, resumable.

* :func:`explain_dataset` runs the per-image explainers over a folder, a list of
  files or a torch ``Dataset`` and writes shards plus ``manifest.json``;
* :func:`read_results` reads them back as a ``pandas.DataFrame``;
* :func:`summarize_dataset` answers the data-set questions: the mean map per
  class, the images whose attribution falls outside the object, the worst
  deletion scores, the most confident mistakes.

Ray is imported only for ``engine="ray"`` (``pip install cnn_explain[ray]``).
"""

from ._settings import METHODS, Engine, parse_method_options
from ._store import read_results
from .runner import DatasetRun, explain_dataset
from .summary import DatasetSummary, summarize_dataset

__all__ = ["explain_dataset", "read_results", "summarize_dataset", "DatasetRun", "DatasetSummary", "Engine", "METHODS",
           "parse_method_options"]
