"""Thread choice: the usable cores other work leaves free, an override, and a ceiling."""

import os

from scoutdoc.runtime import threads


def test_choose_stays_within_the_ceiling_and_the_usable_cores(monkeypatch):
    monkeypatch.delenv("SCOUTDOC_THREADS", raising=False)
    monkeypatch.setattr(threads, "busy_cores", lambda sample_s=0.1: 0.0)
    assert threads.choose(1) == 1
    assert threads.choose(64) == threads.usable_cores() == len(os.sched_getaffinity(0))


def test_busy_cores_are_left_to_the_work_that_keeps_them_busy(monkeypatch):
    monkeypatch.delenv("SCOUTDOC_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_cores", lambda sample_s=0.1: 2.9)
    assert threads.choose(8) == 5
    monkeypatch.setattr(threads, "busy_cores", lambda sample_s=0.1: 12.0)
    assert threads.choose(8) == 1  # never zero


def test_scoutdoc_threads_overrides(monkeypatch):
    monkeypatch.setenv("SCOUTDOC_THREADS", "3")
    assert threads.choose(1) == 3


def test_busy_cores_reads_proc_stat():
    busy = threads.busy_cores(0.05)
    assert 0.0 <= busy <= threads.usable_cores() + 1e-6
