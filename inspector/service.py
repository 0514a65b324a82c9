"""Sharing one process among many users: per-device work queue and out-of-memory recovery.

Streamlit runs each browser session in its own thread over one cached model. Forward passes
themselves are thread-safe (see capture.py), but several sessions running long texts on one
GPU at once can exhaust its memory together; `device_slot` admits a bounded number of
analyses per device at a time (1 per GPU by default) and tells a waiting caller its place.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from .errors import OutOfMemoryError
from .models import release_memory


def _limit_for(device: torch.device) -> int:
    if device.type == "cuda":
        return max(1, int(os.environ.get("INSPECTOR_GPU_CONCURRENCY", "1")))
    return max(1, int(os.environ.get("INSPECTOR_CPU_CONCURRENCY", "2")))


class DeviceQueue:
    """A counting semaphore per device, with a count of who is waiting."""

    def __init__(self) -> None:
        self._meta = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._waiting: dict[str, int] = {}

    def _slot(self, key: str, device: torch.device) -> threading.BoundedSemaphore:
        with self._meta:
            if key not in self._slots:
                self._slots[key] = threading.BoundedSemaphore(_limit_for(device))
                self._waiting[key] = 0
            return self._slots[key]

    def waiting(self, device: torch.device | str) -> int:
        with self._meta:
            return self._waiting.get(str(device), 0)

    @contextmanager
    def slot(self, device: torch.device | str, on_wait: Callable[[int], None] | None = None) -> Iterator[None]:
        """Run the block when the device is free; `on_wait(position)` is called if the caller must queue."""
        device = torch.device(device)
        key = str(device)
        sem = self._slot(key, device)
        if not sem.acquire(blocking=False):
            with self._meta:
                self._waiting[key] += 1
                position = self._waiting[key]
            try:
                if on_wait is not None:
                    on_wait(position)
                sem.acquire()
            finally:
                with self._meta:
                    self._waiting[key] -= 1
        try:
            yield
        except torch.OutOfMemoryError:
            release_memory()
            raise OutOfMemoryError(f"{key} ran out of memory during the analysis.") from None
        finally:
            sem.release()


DEVICE_QUEUE = DeviceQueue()


def device_slot(device, on_wait: Callable[[int], None] | None = None):
    """Module-level shortcut: `with device_slot(lm.device, on_wait=...): ...`."""
    return DEVICE_QUEUE.slot(device, on_wait)
