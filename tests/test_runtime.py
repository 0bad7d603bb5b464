"""Signals held back while the run starts or waits for its worker threads (geocloud.runtime)."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from geocloud.runtime import HANDLED_SIGNALS, ThreadPool, exit_on_signals, signals_deferred


@pytest.fixture
def handlers():
    saved = {sig: signal.getsignal(sig) for sig in HANDLED_SIGNALS}
    exit_on_signals()
    yield
    for sig, h in saved.items():
        signal.signal(sig, h)


def _kill_self(sig: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), sig)
    for _ in range(1000):  # let the main thread reach a point where Python runs handlers
        time.sleep(0)


def test_sigterm_exits_143_and_sigint_interrupts(handlers):
    with pytest.raises(SystemExit) as exc:
        _kill_self(signal.SIGTERM)
    assert exc.value.code == 128 + signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):
        _kill_self(signal.SIGINT)


def test_a_deferred_signal_is_raised_when_the_outer_section_ends(handlers):
    reached = []
    with pytest.raises(SystemExit) as exc, signals_deferred():
        with signals_deferred():
            _kill_self()
            reached.append("inner")
        reached.append("outer")  # the inner section's end does not raise yet
    assert reached == ["inner", "outer"]
    assert exc.value.code == 128 + signal.SIGTERM
    with signals_deferred():  # nothing is left pending
        pass


def _signal_while_starting(monkeypatch, pool_cls, *, hold_job: bool) -> bool:
    """Submit a job to a fresh pool with SIGTERM arriving just after its thread has started
    (inside Thread.start, before the pool has recorded the thread); then shut the pool down
    as a run's cleanup does, and say whether that waited for the job.  The job takes 0.3 s;
    ``hold_job`` also keeps it from ending until the answer is known (so a shutdown that
    does not wait is seen to, however slow the machine)."""
    real_start = threading.Thread.start

    def start(self):
        real_start(self)
        _kill_self()

    gate, done = threading.Event(), threading.Event()

    def job():
        gate.wait(10)
        time.sleep(0.3)
        done.set()

    pool = pool_cls(1, thread_name_prefix="geocloud-test")
    monkeypatch.setattr(threading.Thread, "start", start)
    try:
        with pytest.raises(SystemExit):
            pool.submit(job)
    finally:
        monkeypatch.setattr(threading.Thread, "start", real_start)
        if not hold_job:
            gate.set()
        pool.shutdown(wait=True)
    waited = done.is_set()
    gate.set()
    done.wait(10)  # a plain executor's orphan thread still ends its job
    return waited


def test_shutdown_waits_for_a_thread_started_as_a_signal_came(handlers, monkeypatch):
    assert _signal_while_starting(monkeypatch, ThreadPool, hold_job=False)


def test_plain_executor_loses_that_thread(handlers, monkeypatch):
    """The failure ThreadPool exists for: a scene closed under such a thread's read
    killed the process with SIGSEGV (the CI run of stop 13)."""
    assert not _signal_while_starting(monkeypatch, ThreadPoolExecutor, hold_job=True)


def test_a_worker_closed_as_a_signal_comes_finishes_its_jobs_first(handlers):
    """The run closes its output files once the writer worker is closed: the close must
    not return (by the signal's exception) while a write is still running."""
    from geocloud.passes import Worker

    started, sent, done = threading.Event(), threading.Event(), threading.Event()
    w = Worker("test")

    def job():
        started.set()
        sent.wait(10)
        time.sleep(0.2)  # still writing when the main thread has the signal
        done.set()

    def kill_once_closing():
        started.wait(10)  # the job has left the queue ...
        while w.q.empty():  # ... so this is close() queueing its end marker
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGTERM)
        sent.set()

    threading.Thread(target=kill_once_closing).start()
    w.put(job)
    with pytest.raises(SystemExit):
        w.close()
    assert done.is_set()


def test_off_the_main_thread_nothing_is_deferred():
    out = []

    def body():
        with signals_deferred():
            out.append("ran")

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert out == ["ran"]
