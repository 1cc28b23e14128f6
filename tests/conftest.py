"""Fixtures shared by every test package.

`smollm2_gguf` gives the real default model (SmolLM2-135M-Instruct Q4_1 GGUF) once per test run.
Its download is cached in a persistent directory (`SCOUTDOC_TEST_MODELS`, default
~/.cache/scoutdoc-test-models) so CI fetches it once, not once per run.
"""

import os
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
