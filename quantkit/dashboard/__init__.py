"""The live dashboard: a widget app (:class:`Dashboard`) and the ``quantkit dashboard`` command."""
from __future__ import annotations

from .app import Dashboard

__all__ = ["Dashboard"]
