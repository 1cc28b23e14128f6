"""Thread choice: the usable cores, an override, and a ceiling; never the momentary load."""

import os

from scoutdoc.runtime import threads


def test_choose_stays_within_the_ceiling_and_the_usable_cores(monkeypatch):
    monkeypatch.delenv("SCOUTDOC_THREADS", raising=False)
    assert threads.choose(1) == 1
    assert threads.choose(64) == threads.usable_cores() == len(os.sched_getaffinity(0))


def test_affinity_narrows_the_count(monkeypatch):
    monkeypatch.delenv("SCOUTDOC_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert threads.choose(8) == 3


def test_scoutdoc_threads_overrides(monkeypatch):
    monkeypatch.setenv("SCOUTDOC_THREADS", "3")
    assert threads.choose(1) == 3


def test_the_count_does_not_follow_the_load(monkeypatch):
    """Two processes asking the same question at different loads must compute with the same threads."""
    monkeypatch.delenv("SCOUTDOC_THREADS", raising=False)
    before = threads.choose(64)
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 50.0, 50.0))
    assert threads.choose(64) == before
