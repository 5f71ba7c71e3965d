"""syncx: declarative data synchronization on a checkpointed streaming core."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
