"""The plan says what it knows about the device: its free memory, or that it is unknown (never "fits: yes")."""

import pytest
import torch

from scoutdoc.runtime.config import ModelConfig
from scoutdoc.runtime.memory import plan_memory


@pytest.fixture
def config(tiny) -> ModelConfig:
    return ModelConfig.from_hf(tiny.LLAMA4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_unknown_not_fitting(config):
    plan = plan_memory(config, 1000, device="cuda")
    text = plan.text()
    assert "fits: yes" not in text and "fits: unknown" in text
    assert "PyTorch sees no CUDA GPU" in text
    assert plan.to_dict()["fits"] is None


def test_known_device_memory_is_shown(config):
    plan = plan_memory(config, 1000, device="cuda", device_capacity=8 << 30, host_capacity=16 << 30)
    text = plan.text()
    assert "8.00 GiB free" in text and text.endswith("fits: yes")
    assert plan.to_dict()["fits"] is True
    too_small = plan_memory(config, 1000, device="cuda", device_capacity=1, host_capacity=16 << 30)
    assert too_small.to_dict()["fits"] is False and "fits: NO" in too_small.text()


def test_unknown_capacity_without_detection(config):
    plan = plan_memory(config, 1000, device="cpu", detect=False)
    (row,) = [line for line in plan.text().splitlines() if line.startswith("device memory")]
    assert row.split()[-1] == "unknown"
    assert plan.to_dict()["fits"] is None


def test_refusal_names_only_run_options_and_each_size_once(config):
    from scoutdoc.errors import MemoryPlanError
    from scoutdoc.runtime.memory import require_fit

    plan = plan_memory(config, 2000, device="cpu", kv_device_budget=1024, device_capacity=1 << 34, host_capacity=1 << 34)
    with pytest.raises(MemoryPlanError) as err:
        require_fit(plan)
    message = str(err.value)
    assert "--context" not in message and "instead of" not in message
    assert "--kv-dtype float8" in message and "--kv-disk DIR" in message
    assert "on a CPU decoding is several times slower" in message  # docs/benchmarks.md: 4.1 against 24 tok/s
