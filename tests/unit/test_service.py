"""Sharing one model among sessions: concurrent captures equal serial ones; the device queue admits and queues."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from inspector import service
from inspector.errors import InputError

from concurrency_check import TEXTS, analyse as _analyse, assert_concurrent_equals_serial


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_bert"])
def test_eight_concurrent_analyses_equal_serial(fixture, request):
    assert_concurrent_equals_serial(request.getfixturevalue(fixture))


def test_one_failing_analysis_does_not_block_the_others(tiny_gpt2):
    texts = TEXTS[:4] + ["   "] + TEXTS[4:7]
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(_analyse, tiny_gpt2, t) for t in texts]
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result(timeout=60))
            except InputError as err:
                outcomes.append(err)
    assert sum(isinstance(o, InputError) for o in outcomes) == 1
    assert sum(isinstance(o, tuple) for o in outcomes) == 7


def test_device_queue_serialises_and_reports_position(monkeypatch):
    monkeypatch.setenv("INSPECTOR_CPU_CONCURRENCY", "1")
    queue = service.DeviceQueue()
    inside, max_inside, positions = [0], [0], []
    lock = threading.Lock()
    release = threading.Event()

    def work():
        with queue.slot("cpu", on_wait=positions.append):
            with lock:
                inside[0] += 1
                max_inside[0] = max(max_inside[0], inside[0])
            release.wait(5)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    while queue.waiting("cpu") < 2:
        pass
    release.set()
    for t in threads:
        t.join(10)
    assert max_inside[0] == 1
    assert sorted(positions) == [1, 2]


def test_out_of_memory_is_translated_and_slot_released(monkeypatch):
    from inspector.errors import OutOfMemoryError

    monkeypatch.setenv("INSPECTOR_CPU_CONCURRENCY", "1")
    queue = service.DeviceQueue()
    with pytest.raises(OutOfMemoryError, match="memory"):
        with queue.slot("cpu"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB")
    with queue.slot("cpu"):  # the slot was released: no deadlock
        pass
