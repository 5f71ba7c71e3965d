"""syncx: declarative data synchronization on a checkpointed streaming core."""

from __future__ import annotations

import os

__all__ = ["__version__"]

__version__ = "0.1.0"

# Arrow's buffers come from the C library's malloc, not from the mimalloc that pyarrow bundles
# (unless the user chose a pool): mimalloc keeps freed segments of the writers' row groups
# mapped, about 40 MB of peak RSS on the two-channel MySQL -> Parquet benchmark, for no
# measurable gain in time. Arrow reads the variable once, when pyarrow is first imported,
# which is why this is set here, before any module of syncx imports it.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

# numpy (which pyarrow loads) starts OpenBLAS's thread pool when it is imported: a thread per
# core that spins, waiting for matrix work syncx never gives it, about 4% of the CPU of the
# two-channel MySQL -> Parquet benchmark on 2 cores. One thread (the caller's) unless the user
# chose otherwise; read by OpenBLAS when it loads, hence here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
