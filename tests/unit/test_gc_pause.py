"""The garbage collector paused around a large document's decode and build (configd_core.gc_pause). No network."""

from __future__ import annotations

import gc
import os
import threading

from configd_core.gc_pause import PAUSE_FROM_BYTES, paused_gc


def test_a_small_document_leaves_the_collector_alone() -> None:
    assert gc.isenabled()
    with paused_gc(PAUSE_FROM_BYTES - 1):
        assert gc.isenabled()
    assert gc.isenabled()


def test_a_large_document_pauses_it_until_the_last_holder_leaves() -> None:
    with paused_gc(PAUSE_FROM_BYTES):
        assert not gc.isenabled()
        with paused_gc(PAUSE_FROM_BYTES):
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer step still holds it
    assert gc.isenabled()


def test_the_pause_ends_when_the_step_raises() -> None:
    try:
        with paused_gc(PAUSE_FROM_BYTES):
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()


def test_concurrent_steps_share_one_pause() -> None:
    inside, release = threading.Barrier(2), threading.Event()

    def step() -> None:
        with paused_gc(PAUSE_FROM_BYTES):
            inside.wait(5)
            release.wait(5)

    other = threading.Thread(target=step)
    other.start()
    with paused_gc(PAUSE_FROM_BYTES):
        inside.wait(5)
        release.set()
        other.join(5)
        assert not gc.isenabled()  # the other step left; this one still holds the pause
    assert gc.isenabled()


def test_a_collector_the_application_disabled_stays_disabled() -> None:
    gc.disable()
    try:
        with paused_gc(PAUSE_FROM_BYTES):
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_child_forked_during_a_pause_gets_the_collector_back() -> None:
    with paused_gc(PAUSE_FROM_BYTES):
        pid = os.fork()
        if pid == 0:  # the child: no thread of the parent's survived to end the pause
            os._exit(0 if gc.isenabled() else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert gc.isenabled()
