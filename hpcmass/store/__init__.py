"""The checkpointed HDF5 store ``<workdir>/store.h5``: layout, readers and writers, all here.

- :mod:`.layout`: every stage's datasets and attributes (the whole format), unit states, paths;
- :mod:`.core`: :class:`Store` (open to read, or a stage to write on every rank) and :class:`StageWriter`;
- :mod:`.readers`: typed readers of each stage's product, which every later stage uses;
- :mod:`.lock`, :mod:`.shards`, :mod:`.provenance`: one writer at a time; per-rank shard files
  where h5py lacks MPI; what every stage group records of its run.

No module outside this package indexes the HDF5 file.
"""

from .core import StageWriter, Store, status
from .layout import ATTRS, DONE, FAILED, LAYOUT, LAYOUT_VERSION, PENDING, STORE_NAME, stage_dir, store_path
from .lock import writer_lock
from .provenance import git_commit, package_versions, utc_now
from .shards import parallel_hdf5

__all__ = ["ATTRS", "DONE", "FAILED", "LAYOUT", "LAYOUT_VERSION", "PENDING", "STORE_NAME", "StageWriter", "Store",
           "git_commit", "package_versions", "parallel_hdf5", "stage_dir", "status", "store_path", "utc_now",
           "writer_lock"]
