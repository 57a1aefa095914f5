"""Voila's kernel manager with one culling rule: a kernel no browser tab is connected to dies.

jupyter_server culls on *idle* kernels, but a live dashboard is never idle: its update loop
talks to the page several times a second, so the kernel of a closed tab would run forever
(and so would its share of CPU and memory). Here a kernel is shut down once no WebSocket has
been connected to it for ``cull_idle_timeout`` seconds. Voila's preheated pool kernels are
exempt (Voila's own override checks them before this one runs).
"""
from __future__ import annotations

import time

from jupyter_core.utils import ensure_async
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

__all__ = ["TabKernelManager"]


class TabKernelManager(AsyncMappingKernelManager):
    """Culls kernels that have had no browser connection for ``cull_idle_timeout`` seconds."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        #: kernel id -> monotonic time a tab was last seen connected (or first looked at).
        self._last_connected: dict[str, float] = {}

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        now = time.monotonic()
        kernel = self._kernels.get(kernel_id)
        state = getattr(kernel, "execution_state", None)
        if state == "dead":
            return await super().cull_kernel_if_idle(kernel_id)
        # Connected, or still running the notebook (a pool kernel being preheated, whose
        # future Voila has not marked done yet): keep it, and restart its clock.
        if self._kernel_connections.get(kernel_id, 0) > 0 or state in ("busy", "starting"):
            self._last_connected[kernel_id] = now
            return
        # First look at a kernel without a tab (e.g. just handed out from the pool, its page
        # still connecting): start its clock now rather than from its last message.
        seen = self._last_connected.setdefault(kernel_id, now)
        if now - seen > self.cull_idle_timeout:
            self.log.info("culling kernel %s: no browser tab for %.0f s", kernel_id, now - seen)
            self._last_connected.pop(kernel_id, None)
            await ensure_async(self.shutdown_kernel(kernel_id))
