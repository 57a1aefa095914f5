"""Voila's kernel manager with one culling rule: a kernel no browser tab is connected to dies.

jupyter_server culls on *idle* kernels, but a live dashboard is never idle: its update loop
talks to the page several times a second, so the kernel of a closed tab would run forever
(and so would its share of CPU and memory). Here a kernel is shut down once no WebSocket has
been connected to it for ``cull_idle_timeout`` seconds (a page that never connected gets at
least :data:`FIRST_CONNECT_GRACE_S`). Kernels running the notebook and Voila's preheated pool
kernels are exempt (Voila's own override checks the pool before this one runs).
"""
from __future__ import annotations

import time

from jupyter_core.utils import ensure_async
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

__all__ = ["FIRST_CONNECT_GRACE_S", "TabKernelManager"]

#: Seconds a kernel handed to a page waits for that page to connect before it is culled.
FIRST_CONNECT_GRACE_S = 60.0


class TabKernelManager(AsyncMappingKernelManager):
    """Culls kernels that have had no browser connection for ``cull_idle_timeout`` seconds."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        #: kernel id -> monotonic time a tab was last seen connected (or first looked at).
        self._last_connected: dict[str, float] = {}
        #: kernels a tab has connected to at least once.
        self._had_tab: set[str] = set()

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        now = time.monotonic()
        kernel = self._kernels.get(kernel_id)
        state = getattr(kernel, "execution_state", None)
        if state == "dead":
            return await super().cull_kernel_if_idle(kernel_id)
        # Connected, or still running the notebook (a pool kernel being preheated, whose
        # future Voila has not marked done yet): keep it, and restart its clock.
        if self._kernel_connections.get(kernel_id, 0) > 0:
            self._had_tab.add(kernel_id)
            self._last_connected[kernel_id] = now
            return
        if state in ("busy", "starting"):
            self._last_connected[kernel_id] = now
            return
        # First look at a kernel without a tab (e.g. just handed out from the pool, its page
        # still loading): start its clock now, and give a page that has never connected at
        # least a minute (a busy machine can take that long to load the widget bundles).
        seen = self._last_connected.setdefault(kernel_id, now)
        grace = self.cull_idle_timeout if kernel_id in self._had_tab else max(
            self.cull_idle_timeout, FIRST_CONNECT_GRACE_S)
        if now - seen > grace:
            self.log.info("culling kernel %s: no browser tab for %.0f s", kernel_id, now - seen)
            self._last_connected.pop(kernel_id, None)
            self._had_tab.discard(kernel_id)
            await ensure_async(self.shutdown_kernel(kernel_id))
