"""The embedded runtime's public Python API (kept stable for the engine and for library users).

    from scoutdoc.runtime import load_model
    m = load_model("SmolLM2-135M-Instruct.Q4_1.gguf", dtype="bfloat16", device="cpu")
    ids = m.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])
    for token in m.generate(ids, max_new_tokens=32): ...

Loaded models are cached by fingerprint and device, and `threads.PROCESS_WATCH` looks at the
machine's load from the moment this package is imported: the only global state in the runtime. The
runtime knows files, not names: `scoutdoc.models.resolve` turns a catalog name into a path.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .threads import PROCESS_WATCH as _PROCESS_WATCH  # noqa: F401  first: it starts watching before torch loads

import torch

from ..errors import ModelError
from ..progress import Progress
from .config import ModelConfig
from .generate import Sampling, Session, TextGeneration, generate_ids, prefill
from .kvcache import CacheOptions, HybridCache, KVCache
from .model import Transformer
from .qload import check_quantize
from .reference import ContiguousCache
from .weights import Checkpoint, build_model, fingerprint, open_checkpoint, resolve_device, resolve_dtype

__all__ = ["LoadedModel", "ModelConfig", "Sampling", "Session", "load_model"]


@dataclass
class LoadedModel:
    config: ModelConfig
    module: Transformer
    checkpoint: Checkpoint
    dtype: torch.dtype
    device: torch.device
    fingerprint: str
    quantize: str = "none"  # how its decoder matrices are held (`qload`): none, auto, int8, int4, fp8
    _tokenizer: object = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        return self.checkpoint.path

    @property
    def tokenizer(self):
        """The model's own tokenizer (GGUF metadata or the HF directory's files), loaded on first use."""
        if self._tokenizer is None:
            from .tokenizer import Tokenizer

            if self.checkpoint.kind == "gguf":
                self._tokenizer = Tokenizer.from_gguf(self.path)
            else:
                self._tokenizer = Tokenizer.from_hf_dir(self.path)
        return self._tokenizer

    @property
    def stop_ids(self) -> list[int]:
        ids = set(self.config.eos_token_ids)
        try:
            ids.update(self.tokenizer.eos_ids)
        except (ImportError, ModelError):
            pass
        return sorted(ids)

    def new_cache(self, kind: str = "hybrid", options: CacheOptions | None = None) -> KVCache:
        """A fresh KV cache: the hybrid one (bounded chunked-layer KV, tiered global-layer KV, the
        kind snapshots are written from) unless `kind="contiguous"` asks for the plain reference
        cache; `options` (budgets, disk directory, KV dtype, attention backend) apply to the hybrid one."""
        if kind == "hybrid":
            return HybridCache(self.config, self.dtype, self.device, options)
        if kind == "contiguous":
            return ContiguousCache(self.config, self.dtype, self.device)
        raise ValueError(f"unknown cache kind {kind!r}; use 'hybrid' or 'contiguous'")

    def new_session(self, cache: KVCache | None = None) -> Session:
        return Session(cache=cache if cache is not None else self.new_cache())

    def logits(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        """Full forward on a fresh cache: fp32 logits [len(ids), vocab]."""
        ids_t = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        with torch.inference_mode():
            return self.module(ids_t, self.new_cache()).float()

    def prefill(
        self, ids: list[int], session: Session | None = None, chunk: int | None = None,
        progress: Progress | None = None,
        threads: Callable[[], int] | None = None,
    ) -> tuple[Session, torch.Tensor]:
        """Process ids (extending `session` if given); returns the session and the last position's logits.

        `chunk` None: pieces of `generate.default_prefill_chunk` (aligned to the attention chunk);
        `threads`: see `generate.prefill`."""
        session = session if session is not None else self.new_session()
        return session, prefill(self.module, session, list(ids), chunk, progress, threads)

    def generate(
        self,
        ids: list[int],
        max_new_tokens: int = 256,
        sampling: Sampling | None = None,
        session: Session | None = None,
        stop_ids: Iterable[int] | None = None,
        prefill_chunk: int | None = None,
        progress: Progress | None = None,
        logits: torch.Tensor | None = None,
        threads: Callable[[], int] | None = None,
    ) -> Iterator[int]:
        """Yield new token ids; stops on the model's end tokens (not yielded) or after max_new_tokens.

        Pass `logits` from `prefill` when `session` already holds all of `ids`; `threads`: see
        `generate.generate_ids`."""
        session = session if session is not None else self.new_session()
        return generate_ids(
            self.module, session, list(ids), max_new_tokens, sampling or Sampling(),
            self.stop_ids if stop_ids is None else stop_ids, prefill_chunk, progress, logits, threads,
        )

    def generate_text(
        self,
        ids: list[int],
        max_new_tokens: int = 256,
        sampling: Sampling | None = None,
        stop: list[str] | None = None,
        session: Session | None = None,
        prefill_chunk: int | None = None,
        progress: Progress | None = None,
        logits: torch.Tensor | None = None,
        threads: Callable[[], int] | None = None,
    ) -> TextGeneration:
        """Stream text pieces (never a split UTF-8 character), stopping at any of `stop` (not included)."""
        return TextGeneration(
            token_source=lambda: self.generate(
                ids, max_new_tokens, sampling, session, None, prefill_chunk, progress, logits, threads
            ),
            tokenizer=self.tokenizer,
            stop=list(stop or []),
            max_new_tokens=max_new_tokens,
            loop_window=(sampling or Sampling()).loop_window,
        )


_LOADED: dict[tuple[str, str], LoadedModel] = {}


def load_model(
    path: str | Path, dtype: str | torch.dtype = "float32", device: str | torch.device = "auto", quantize: str = "none"
) -> LoadedModel:
    """Load (or reuse) a model from a GGUF file or an HF directory; `quantize` (none, auto, int8,
    int4, fp8) says which decoder matrices stay or become quantized (`qload`)."""
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    quantize_as = check_quantize(quantize)
    ckpt = open_checkpoint(Path(path).expanduser())
    fp = fingerprint(ckpt, torch_dtype, quantize_as)
    key = (fp, str(dev))
    if key not in _LOADED:
        module = build_model(ckpt, torch_dtype, dev, quantize_as)
        _LOADED[key] = LoadedModel(ckpt.config, module, ckpt, torch_dtype, dev, fp, quantize_as)
    return _LOADED[key]
