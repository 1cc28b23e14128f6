"""Thread choice: prompt pieces and decode steps on the cores other processes leave free."""

import os

import pytest
import torch

from scoutdoc.runtime import load_model, threads


def test_the_count_stays_within_the_ceiling_and_the_usable_cores(monkeypatch):
    monkeypatch.delenv("SCOUTDOC_THREADS", raising=False)
    assert threads.LoadWatch().threads(1) == 1
    monkeypatch.setattr(threads, "_busy_seconds", lambda cpus: None)  # no measurement: every usable core
    assert threads.LoadWatch().threads(64) == threads.usable_cores() == len(os.sched_getaffinity(0))


def test_affinity_narrows_the_count(monkeypatch):
    monkeypatch.delenv("SCOUTDOC_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.setattr(threads, "_busy_seconds", lambda cpus: None)
    assert threads.LoadWatch().threads(8) == 3


def test_scoutdoc_threads_overrides(monkeypatch):
    monkeypatch.setenv("SCOUTDOC_THREADS", "3")
    assert threads.LoadWatch().threads(1) == 3


def test_every_prompt_piece_runs_on_the_count_asked_for_before_it(tiny, tmp_path):
    """A prompt read on a busy machine moves to the free cores between pieces (`generate.prefill`)."""
    model = load_model(tiny.save(tiny.llama(), tmp_path / "llama"), device="cpu")
    asked, used = [], []
    handle = model.module.register_forward_pre_hook(lambda module, args: used.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        counts = iter([2, 1, 1, 2])
        model.prefill(list(range(3, 13)), chunk=3, threads=lambda: asked.append(1) or next(counts))
    finally:
        handle.remove()
        torch.set_num_threads(before)
    assert len(asked) == 4 and used == [2, 1, 1, 2]


@pytest.fixture(scope="module")
def wide_checkpoints(tiny, tmp_path_factory):
    """A dense Llama and a Llama 4 (MoE, NoPE, chunked) wide enough that every decode product,
    attention and norm is split between two threads."""
    root = tmp_path_factory.mktemp("wide")
    llama = tiny.llama(hidden_size=256, intermediate_size=1024, head_dim=64, vocab_size=512, initializer_range=0.02)
    llama4 = tiny.llama4(hidden_size=256, intermediate_size=256, intermediate_size_mlp=512, head_dim=64,
                         vocab_size=512, initializer_range=0.02)
    return {"llama": tiny.save(llama, root / "llama"), "llama4": tiny.save(llama4, root / "llama4")}


def _decode_logits(model, threads: int) -> torch.Tensor:
    ids = list(range(3, 43))
    torch.set_num_threads(2)
    session, logits = model.prefill(ids)
    torch.set_num_threads(threads)
    rows = []
    with torch.inference_mode():
        for _ in range(6):
            token = int(logits.argmax())
            logits = model.module(torch.tensor([token]), session.cache)[-1].float()
            rows.append(logits)
    return torch.stack(rows)


@pytest.mark.parametrize("arch", ["llama", "llama4"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("quantize", ["none", "int8", "int4"])
def test_decode_steps_do_not_depend_on_the_thread_count(wide_checkpoints, arch, dtype, quantize):
    """What lets `LoadWatch` move the decode threads with the load: the same steps with one thread
    and with two give the same logits bit for bit."""
    before = torch.get_num_threads()
    try:
        model = load_model(wide_checkpoints[arch], dtype=dtype, device="cpu", quantize=quantize)
        assert torch.equal(_decode_logits(model, 1), _decode_logits(model, 2))
    finally:
        torch.set_num_threads(before)


def test_load_watch_gives_the_cores_others_leave_free(monkeypatch):
    monkeypatch.delenv("SCOUTDOC_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    clock, busy, own = [100.0], [50.0], [5.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(threads, "_busy_seconds", lambda cpus: busy[0])
    monkeypatch.setattr(threads, "_own_seconds", lambda: own[0])
    watch = threads.LoadWatch()
    assert watch.threads(8) == 4  # nothing measured yet: every usable core
    clock[0] += 1.0; busy[0] += 2.0; own[0] += 1.0  # this process used one core, others one more
    assert watch.threads(8) == 3 and watch.threads(2) == 2
    clock[0] += 0.01; busy[0] += 0.04  # too short a look to judge: the last answer stands
    assert watch.threads(8) == 3
    clock[0] += 1.0; busy[0] += 3.96; own[0] += 0.5  # others kept about three and a half cores busy
    assert watch.threads(8) == 1
    clock[0] += 1.0; busy[0] += 1.5; own[0] += 1.0  # half a core taken by others is a core lost
    assert watch.threads(8) == 3
    clock[0] += 1.0; busy[0] += 1.2; own[0] += 1.0  # background noise is not
    assert watch.threads(8) == 4
    monkeypatch.setenv("SCOUTDOC_THREADS", "2")
    assert watch.threads(8) == 2


def test_load_watch_without_proc_stat_keeps_every_usable_core(monkeypatch):
    monkeypatch.delenv("SCOUTDOC_THREADS", raising=False)
    monkeypatch.setattr(threads, "_busy_seconds", lambda cpus: None)
    assert threads.LoadWatch().threads(64) == threads.usable_cores()
