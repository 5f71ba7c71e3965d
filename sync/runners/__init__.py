"""Runners: where a job's subtasks run. ``local`` (threads, :mod:`sync.runtime`) is the default;
``ray`` (:mod:`sync.runners.ray`, the ``ray`` extra) spreads them over a Ray cluster."""

from __future__ import annotations

__all__ = ["RUNNERS"]

RUNNERS = ("local", "ray")
