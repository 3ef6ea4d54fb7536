"""Data: where samples come from and how they become the tensors a trial trains on.

Sources (`synthetic`, `files`, `vision`) hand over NumPy arrays (`arrays.RawData`); `prepare` turns
any of them into a DataBundle (checks, task, splits, train-only statistics); `catalog` names the
datasets, parses `name?option=value` specs and caches loaded bundles per process. Nothing here
imports torch until a bundle is built.
"""

from automl_nn.data.arrays import RawData
from automl_nn.data.catalog import (
                                    DATASETS,
                                    SPLIT_SEED,
                                    DatasetInfo,
                                    DataSpec,
                                    listing,
                                    load,
                                    on_device,
                                    parse_spec,
                                    subsample,
)
from automl_nn.data.prepare import DataBundle, bundle_from_arrays, channel_stats, split_indices

__all__ = ["DATASETS", "SPLIT_SEED", "DataBundle", "DataSpec", "DatasetInfo", "RawData", "bundle_from_arrays",
           "channel_stats", "listing", "load", "on_device", "parse_spec", "split_indices", "subsample"]
