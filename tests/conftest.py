"""Fixtures shared by every test package.

`smollm2_gguf` gives the real default model (SmolLM2-135M-Instruct Q4_1 GGUF) once per test run.
Its download is cached in a persistent directory (`SCOUTDOC_TEST_MODELS`, default
~/.cache/scoutdoc-test-models) so CI fetches it once, not once per run.

A test that uses the real model (through these fixtures, or a server started on it) must be marked
`@pytest.mark.slow`, so `pytest -m "not slow"` stays a fast inner loop that never downloads it;
collection stops with the test's name when one is not (see docs/testing.md).
"""

import os
import sys
from pathlib import Path

import pytest

TEST_MODELS = Path(os.environ.get("SCOUTDOC_TEST_MODELS", Path.home() / ".cache" / "scoutdoc-test-models"))


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """Path to the default model's GGUF file, pulled through scoutdoc.models into a persistent cache."""
    from scoutdoc import models

    saved = os.environ.get("SCOUTDOC_MODELS")
    os.environ["SCOUTDOC_MODELS"] = str(TEST_MODELS)
    try:
        return Path(models.pull("smollm2-135m"))
    finally:
        if saved is None:
            os.environ.pop("SCOUTDOC_MODELS", None)
        else:
            os.environ["SCOUTDOC_MODELS"] = saved


@pytest.fixture(scope="session")
def default_gguf(smollm2_gguf: Path) -> Path:
    """The default model's GGUF under the name the models and tokenizer tests use (same single download)."""
    return smollm2_gguf


REAL_MODEL_FIXTURES = {"smollm2_gguf", "default_gguf"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items
                if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError(
            "these tests use the real default model but are not marked @pytest.mark.slow (see docs/testing.md):\n  "
            + "\n  ".join(unmarked)
        )


def pytest_collection_finish(session: pytest.Session) -> None:
    """One intra-op thread for torch in the test process (subprocesses keep the default).

    The runtime tests run tiny tensors, which gain nothing from threads; on a busy 2-core machine
    OpenMP's two threads wait on each other at every operation, and one thread ran the KV-cache tests
    20x faster (2 s instead of 46 s). Applied when collection imported torch; a suite that never
    imports it (session and batch tests alone) does not pay for importing it here.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
