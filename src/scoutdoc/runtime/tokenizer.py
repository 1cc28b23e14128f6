"""The model's own tokenizer as a tiktoken `Encoding`, and its chat template rendered with jinja2.

Everything comes from files the model ships with — an HF `tokenizer.json`, a GGUF file's
`tokenizer.ggml.*` metadata or Meta's `tokenizer.model` — never from the network. Two translations
make tiktoken split and merge exactly like Hugging Face `tokenizers`: the pre-tokenizer becomes one
`pat_str` (`pretokenize.py`) and the merges become ranks (`vocab.py`, which reads the files).

Byte-level vocabularies trained with HF may lack a few byte symbols (SmolLM2 has no symbol for
some ASCII control characters); HF silently drops such bytes after pre-tokenization. tiktoken
cannot, so those bytes get placeholder ranks that encode to nothing, and text containing them takes
a slower path that drops them from each piece before merging, as HF does.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterable, Iterator
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .pretokenize import MAX_RUN, cut_long_runs
from .vocab import Vocab, vocab_from_gguf, vocab_from_hf_dir, vocab_from_meta


class Tokenizer:
    """Encode/decode with the model's vocabulary; render conversations with its chat template."""

    def __init__(self, vocab: Vocab):
        import tiktoken

        self.name = vocab.name
        self.pat_str = vocab.pat_str
        self.vocab_size = vocab.vocab_size
        self.bos_id = vocab.bos_id
        self.special_tokens = dict(vocab.specials)
        self.chat_template = vocab.chat_template
        self._template_vars = dict(vocab.template_vars)
        self._add_prefix_space = vocab.add_prefix_space

        ranks = dict(vocab.ranks)
        top = max(ranks.values()) + 1
        for b in range(256):  # tiktoken needs every byte; a byte the vocabulary lacks encodes to nothing
            if bytes([b]) not in ranks:
                ranks[bytes([b])] = top
                top += 1
        # Special tokens are matched by us (leftmost-longest, like HF's added-token matcher), so the
        # Encoding holds ordinary ranks only.
        self._ranks = ranks
        self._enc = tiktoken.Encoding(vocab.name, pat_str=vocab.pat_str, mergeable_ranks=ranks, special_tokens={})
        self._rank_to_id = np.full(top, -1, dtype=np.int64)
        for rank, token_id in vocab.rank_ids.items():
            self._rank_to_id[rank] = token_id
        self._id_bytes: list[bytes] = [b""] * vocab.vocab_size
        for token, rank in ranks.items():
            token_id = int(self._rank_to_id[rank])
            if 0 <= token_id < vocab.vocab_size:
                self._id_bytes[token_id] = token
        for text, token_id in vocab.specials.items():
            if 0 <= token_id < vocab.vocab_size:
                self._id_bytes[token_id] = text.encode("utf-8")
        self._special_ids = frozenset(vocab.specials.values())
        ordered = sorted(vocab.specials, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._dropped = bytes(b for b in range(256) if self._rank_to_id[ranks[bytes([b])]] < 0)
        self._eos_ids = list(dict.fromkeys(vocab.eos_ids))
        turn_end = self._turn_end_token()
        if turn_end is not None and turn_end not in self._eos_ids:
            self._eos_ids.append(turn_end)
        self.fingerprint = self._fingerprint()

    # -- constructors --------------------------------------------------------------------------

    @classmethod
    def from_hf_dir(cls, path: Path | str) -> Tokenizer:
        return cls(vocab_from_hf_dir(Path(path)))

    @classmethod
    def from_gguf(cls, path: Path | str) -> Tokenizer:
        return cls(vocab_from_gguf(Path(path)))

    @classmethod
    def from_meta(cls, path: Path | str) -> Tokenizer:
        return cls(vocab_from_meta(Path(path)))

    # -- encoding ------------------------------------------------------------------------------

    @property
    def eos_ids(self) -> list[int]:
        """Every id that ends generation: the configured end-of-sequence ids plus the template's end-of-turn."""
        return list(self._eos_ids)

    def encode(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of `text`. No BOS is added (chat templates write it themselves).

        With `special=True`, special-token strings in the text become their special ids; with
        `special=False` they are ordinary text, so untrusted document text cannot inject a turn boundary.
        """
        ids: list[int] = []
        for segment, is_special in self._segments(text, special):
            if is_special:
                ids.append(self.special_tokens[segment])
            else:
                ids.extend(self._encode_ordinary(segment))
        return ids

    def _segments(self, text: str, special: bool) -> Iterator[tuple[str, bool]]:
        if not special or self._special_re is None:
            if text:
                yield text, False
            return
        start = 0
        for m in self._special_re.finditer(text):
            if m.start() > start:
                yield text[start : m.start()], False
            yield m.group(), True
            start = m.end()
        if start < len(text):
            yield text[start:], False

    def _encode_ordinary(self, text: str) -> list[int]:
        if self._add_prefix_space and not text.startswith(" "):
            text = " " + text
        if len(text) > MAX_RUN:
            parts = cut_long_runs(text)
            if len(parts) > 1:
                return [i for part in parts for i in self._encode_part(part)]
        return self._encode_part(text)

    def _encode_part(self, text: str) -> list[int]:
        if self._dropped and self._has_dropped(text):
            return self._encode_dropping(text)
        ranks = self._enc.encode_ordinary(text)
        if not ranks:
            return []
        ids = self._rank_to_id[np.asarray(ranks, dtype=np.int64)]
        if self._dropped:
            ids = ids[ids >= 0]
        return ids.tolist()

    def _has_dropped(self, text: str) -> bool:
        data = text.encode("utf-8", "surrogatepass")
        return len(data.translate(None, self._dropped)) != len(data)

    def _encode_dropping(self, text: str) -> list[int]:
        """HF's behaviour for bytes missing from the vocabulary: split first, then drop them from each piece.

        The remaining bytes need not be valid UTF-8, so they go to tiktoken's byte-level single-piece
        BPE (the same call tiktoken's own pure-Python splitting path uses).
        """
        import regex

        ids: list[int] = []
        for m in regex.finditer(self.pat_str, text):
            piece = m.group().encode("utf-8", "surrogatepass").translate(None, self._dropped)
            if piece:
                ids.extend(int(self._rank_to_id[r]) for r in self._enc._encode_single_piece(piece))
        return [i for i in ids if i >= 0]

    # -- decoding ------------------------------------------------------------------------------

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (a special token's text for special ids; b"" for unused ids)."""
        if 0 <= token_id < self.vocab_size:
            return self._id_bytes[token_id]
        return b""

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return b"".join(self.token_bytes(int(i)) for i in ids)

    def decode(self, ids: Iterable[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    # -- chat template -------------------------------------------------------------------------

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """Render a conversation with the model's own template, the way transformers does."""
        if not self.chat_template:
            raise ModelError(f"tokenizer {self.name!r} has no chat template; use a chat/instruct model")
        template = _compile_template(self.chat_template)
        import jinja2

        try:
            return template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                tools=None,
                documents=None,
                **self._template_vars,
            )
        except jinja2.TemplateError as exc:
            raise ModelError(f"the model's chat template rejected the conversation: {exc}") from exc

    def _turn_end_token(self) -> int | None:
        """The special token a template writes right after an assistant message (e.g. `<|im_end|>`, `<|eot|>`)."""
        if not self.chat_template or self._special_re is None:
            return None
        marker = "\x00scoutdoc-reply\x00"
        try:
            text = self.apply_chat_template(
                [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}], add_generation_prompt=False
            )
        except Exception:  # noqa: BLE001 - a template that cannot render this probe just has no detectable end token
            return None
        at = text.find(marker)
        if at < 0:
            return None
        m = self._special_re.match(text, at + len(marker))
        return self.special_tokens[m.group()] if m else None

    def _fingerprint(self) -> str:
        """Hash of the split pattern, the tokens by id, the merge order and the special tokens."""
        h = hashlib.sha256()
        h.update(self.pat_str.encode())
        h.update(b"".join(struct.pack("<I", len(t)) + t for t in self._id_bytes))
        by_rank = sorted(self._ranks.items(), key=lambda kv: kv[1])
        h.update(b"".join(struct.pack("<Iq", len(t), self._rank_to_id[r]) + t for t, r in by_rank))
        h.update(json.dumps(sorted(self.special_tokens.items())).encode())
        return h.hexdigest()[:16]


@lru_cache(maxsize=8)
def _compile_template(source: str):
    """A sandboxed jinja2 template set up as transformers sets up chat templates."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
        # jinja's own tojson HTML-escapes; chat templates expect plain JSON.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ModelError(f"the model's chat template is not valid jinja ({exc}); fix or replace the template") from exc



def load_tokenizer(path: Path | str) -> Tokenizer:
    """The tokenizer of a model file or directory: `tokenizer.json`, a GGUF file, or Meta's `tokenizer.model`."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return Tokenizer.from_gguf(path)
    if path.is_file() and path.name == "tokenizer.model":
        return Tokenizer.from_meta(path)
    if path.is_file() and path.name in ("tokenizer.json", "config.json"):
        path = path.parent
    if path.is_dir():
        if (path / "tokenizer.json").exists():
            return Tokenizer.from_hf_dir(path)
        if (path / "tokenizer.model").exists():
            return Tokenizer.from_meta(path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return Tokenizer.from_gguf(ggufs[0])
        raise ModelError(
            f"no tokenizer in {path}: it needs tokenizer.json (Hugging Face), tokenizer.model (Meta) or one .gguf file"
        )
    raise ModelError(f"{path} does not exist or holds no tokenizer; point --model at a .gguf file or a model directory")
