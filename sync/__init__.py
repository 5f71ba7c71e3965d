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
