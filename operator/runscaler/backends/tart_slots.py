"""The host's VM slots: Apple runs at most 2 macOS VMs per host, whoever asks.

One `SlotManager` per TART_HOME is shared by every Tart scale set on it (the Go tool kept slots
per scale set, so two scale sets together ran 4 VMs and reused each other's MACs). A slot is
held from before `tart clone` until the VM is deleted — or until deleting it failed, since a
slot is always given back (a VM that would not delete is retried as a leftover; if it still
runs, `tart run` reports the host's limit and the start backs off). Each slot has its own MAC,
so a host reuses a handful of DHCP leases instead of burning one per VM.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


def slot_mac(slot: int, offset: int = 0) -> str:
    """The locally administered MAC of a slot: 02:00:00:00:00:NN with NN = slot + 1 + offset."""
    return f"02:00:00:00:00:{(slot + 1 + offset) & 0xFF:02x}"


class SlotManager:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used: set[int] = set()
        self._waiters: deque[asyncio.Future[int]] = deque()

    @property
    def in_use(self) -> frozenset[int]:
        return frozenset(self._used)

    @property
    def waiting(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    def _free(self) -> int | None:
        for slot in range(self.limit):
            if slot not in self._used:
                return slot
        return None

    async def acquire(self) -> int:
        """The lowest free slot, first come first served; cancellation never loses a slot."""
        free = self._free()
        if free is not None and not self.waiting:
            self._used.add(free)
            return free
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed over just as we were cancelled
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            raise

    def claim(self, slot: int) -> bool:
        """Mark a slot taken by a VM found running (adoption); False if it was not free."""
        if slot in self._used or not 0 <= slot < self.limit:
            return False
        self._used.add(slot)
        return True

    def release(self, slot: int) -> None:
        """Give a slot back (twice is harmless); the longest waiter gets it."""
        if slot not in self._used:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._used.discard(slot)
