"""syncx plugins for append-only JSON-lines logs: ``applogreader`` and ``applogwriter``.

The worked example of ``docs/writing-a-connector.md``: a reader whose position is a byte offset
and a writer that stages files and renames them at commit, both passing the conformance kit.
"""

from __future__ import annotations

__all__: list[str] = []
