"""The model's own tokenizer as a tiktoken `Encoding`, and its chat template rendered with jinja2.

Everything comes from files the model ships with — an HF `tokenizer.json`, a GGUF file's
`tokenizer.ggml.*` metadata or Meta's `tokenizer.model` — never from the network.

Two translations make tiktoken split and merge exactly like Hugging Face `tokenizers`:

* Pre-tokenizer → one `pat_str`. HF may chain several pre-tokenizers (SmolLM2: `Digits` then
  ByteLevel's GPT-2 regex); tiktoken runs one regex. The chained form is rewritten so that a
  single left-to-right scan gives the same pieces (see `_gpt2_digits_pattern`).
* Merges → ranks. HF merges the adjacent pair that comes first in its merge list; tiktoken merges
  the pair whose *concatenation* has the lowest rank. Giving every merged token the rank of the
  merge that creates it (single bytes first) makes the two orders agree. tiktoken ranks are then
  mapped to the model's token ids through a lookup array.

Byte-level vocabularies trained with HF may lack a few byte symbols (SmolLM2 has no symbol for
some ASCII control characters); HF silently drops such bytes after pre-tokenization. tiktoken
cannot, so those bytes get placeholder ranks that encode to nothing, and text containing them takes
a slower path that drops them from each piece before merging, as HF does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .gguf import read_gguf_metadata

# --- pre-tokenizer patterns -------------------------------------------------------------------

# The GPT-2 regex that HF's ByteLevel pre-tokenizer applies when `use_regex` is true.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Meta's Llama 4 `tokenizer.py` (o200k style); also what llama.cpp calls "llama4"/"gpt-4o".
LLAMA4_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _gpt2_digits_pattern(individual: bool) -> str:
    """HF `Digits` followed by ByteLevel's GPT-2 regex, as one regex.

    `Digits` first cuts the text into digit pieces (single digits, or whole runs) and non-digit
    pieces; the GPT-2 regex then runs inside each piece. So a digit is never glued to a preceding
    space (` ?\\p{N}+` loses its space), and a whitespace run just before a digit sits at the *end* of
    its piece, where `\\s+(?!\\S)` takes all of it. On the unsplit text the lookahead must therefore
    also succeed before a digit: `(?![^\\s\\p{N}])` instead of `(?!\\S)`.
    """
    digits = r"\p{N}" if individual else r"\p{N}+"
    return rf"'s|'t|'re|'ve|'m|'ll|'d| ?\p{{L}}+|{digits}| ?[^\s\p{{L}}\p{{N}}]+|\s+(?![^\s\p{{N}}])|\s+"


# llama.cpp's `tokenizer.ggml.pre` names → the split they stand for.
GGUF_PRE_PATTERNS = {
    "gpt-2": GPT2_PATTERN,
    "gpt2": GPT2_PATTERN,
    "smollm": _gpt2_digits_pattern(True),
    "starcoder": _gpt2_digits_pattern(True),
    "llama-bpe": LLAMA3_PATTERN,
    "llama3": LLAMA3_PATTERN,
    "llama-v3": LLAMA3_PATTERN,
    "llama4": LLAMA4_PATTERN,
    "gpt-4o": LLAMA4_PATTERN,
}

# Used when a Meta checkpoint directory has no chat template of its own (llama4.md §3.3).
LLAMA4_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|header_start|>' + message['role'] + '<|header_end|>\n\n' + message['content'] + '<|eot|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|header_start|>assistant<|header_end|>\n\n' }}{% endif %}"
)


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table used by byte-level vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_unicode().items()}


def _symbols_to_bytes(token: str) -> bytes | None:
    """A byte-level vocabulary entry as raw bytes; None if it is not written in the byte alphabet."""
    table = _unicode_to_byte()
    try:
        return bytes(table[c] for c in token)
    except KeyError:
        return None


# tiktoken's regex engine overflows its stack on a run of about a million spaces. Runs longer than
# this are cut (as Meta's Llama tokenizer cuts them, at 25k) — the only place where our split can
# differ from HF's, and only for inputs no real document has.
MAX_RUN = 100_000
_LONG_RUN = re.compile(rf"(?<!\s)\s{{{MAX_RUN + 1},}}|(?<!\S)\S{{{MAX_RUN + 1},}}")  # tried only at run starts: linear


def _cut_long_runs(text: str) -> list[str]:
    """`text` cut every MAX_RUN characters inside whitespace or non-whitespace runs longer than that."""
    cuts = [m.start() + k for m in _LONG_RUN.finditer(text) for k in range(MAX_RUN, m.end() - m.start(), MAX_RUN)]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


# --- the tokenizer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Vocab:
    """What every source is turned into before the tiktoken `Encoding` is built."""

    name: str
    pat_str: str
    ranks: dict[bytes, int]  # tiktoken mergeable ranks
    rank_ids: dict[int, int]  # tiktoken rank → model token id (-1: a byte the model drops)
    specials: dict[str, int]  # special/added token text → model token id
    vocab_size: int
    bos_id: int | None
    eos_ids: list[int]
    chat_template: str | None
    template_vars: dict[str, str]  # bos_token, eos_token, … as the chat template sees them
    add_prefix_space: bool = False


class Tokenizer:
    """Encode/decode with the model's vocabulary; render conversations with its chat template."""

    def __init__(self, vocab: _Vocab):
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
        return cls(_vocab_from_hf_dir(Path(path)))

    @classmethod
    def from_gguf(cls, path: Path | str) -> Tokenizer:
        return cls(_vocab_from_gguf(Path(path)))

    @classmethod
    def from_meta(cls, path: Path | str) -> Tokenizer:
        return cls(_vocab_from_meta(Path(path)))

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
            parts = _cut_long_runs(text)
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


# --- loading ----------------------------------------------------------------------------------


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


def _ranks_from_merges(
    vocab: dict[bytes, int], merges: Iterable[tuple[bytes, bytes]], keep_unmerged: bool
) -> tuple[dict[bytes, int], dict[int, int]]:
    """tiktoken ranks reproducing HF merge priority, and the rank → token id map.

    Bytes first (ranks 0–255; a byte the vocabulary lacks maps to -1 and is dropped), then each
    merged token at 256 + the position of the first merge that creates it. Vocabulary entries no
    merge can create are only reachable when HF matches whole words (`ignore_merges`), so they are
    kept (after all merges) only then.
    """
    ranks: dict[bytes, int] = {}
    rank_ids: dict[int, int] = {}
    for b in range(256):
        token = bytes([b])
        ranks[token] = b
        rank_ids[b] = vocab.get(token, -1)
    next_rank = 256
    for left, right in merges:
        merged = left + right
        if merged in ranks:
            continue
        token_id = vocab.get(merged)
        if token_id is None:
            raise ModelError("the tokenizer's merges produce a token missing from its vocabulary; the tokenizer file is damaged")
        ranks[merged] = next_rank
        rank_ids[next_rank] = token_id
        next_rank += 1
    if keep_unmerged:
        for token, token_id in sorted(vocab.items(), key=lambda kv: kv[1]):
            if token not in ranks:
                ranks[token] = next_rank
                rank_ids[next_rank] = token_id
                next_rank += 1
    return ranks, rank_ids


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {path} ({exc}); re-download the model's tokenizer files") from exc


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def _pattern_from_hf(pre: dict[str, Any] | None, path: Path) -> tuple[str, bool]:
    """One tiktoken pattern (and ByteLevel's add_prefix_space) for an HF pre-tokenizer configuration."""
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else ([pre] if pre else [])
    kinds = [s.get("type") for s in steps]

    def unsupported() -> ModelError:
        return ModelError(
            f"{path}: pre-tokenizer {json.dumps(kinds)} is not supported; scoutdoc reads byte-level BPE tokenizers "
            "(GPT-2, SmolLM2, Llama 3/4 style)"
        )

    if not steps or kinds[-1] != "ByteLevel":
        raise unsupported()
    byte_level = steps[-1]
    prefix = bool(byte_level.get("add_prefix_space", False))
    use_regex = bool(byte_level.get("use_regex", True))
    if kinds == ["ByteLevel"] and use_regex:
        return GPT2_PATTERN, prefix
    if prefix:
        raise unsupported()  # a prefix space per split piece: no published model uses it
    if kinds == ["Digits", "ByteLevel"] and use_regex:
        return _gpt2_digits_pattern(bool(steps[0].get("individual_digits", False))), False
    if kinds == ["Split", "ByteLevel"] and not use_regex:
        split = steps[0]
        pattern = (split.get("pattern") or {}).get("Regex")
        if pattern and split.get("behavior") == "Isolated" and not split.get("invert", False):
            return pattern, False
    raise unsupported()


def _vocab_from_hf_dir(path: Path) -> _Vocab:
    tok_file = path / "tokenizer.json"
    if not tok_file.exists():
        raise ModelError(f"{path} has no tokenizer.json; copy the model's tokenizer.json into that directory")
    data = _read_json(tok_file)
    model = data.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or model.get("continuing_subword_prefix") or model.get(
        "end_of_word_suffix"
    ):
        raise ModelError(f"{tok_file}: only byte-level BPE tokenizers are supported (found {model.get('type')!r})")
    if data.get("normalizer"):
        raise ModelError(f"{tok_file}: tokenizers with a normalizer are not supported")
    pat_str, prefix = _pattern_from_hf(data.get("pre_tokenizer"), tok_file)

    vocab: dict[bytes, int] = {}
    for token, token_id in model.get("vocab", {}).items():
        raw = _symbols_to_bytes(token)
        if raw is None:
            raise ModelError(f"{tok_file}: vocabulary entry {token!r} is not byte-level; only byte-level BPE is supported")
        vocab.setdefault(raw, int(token_id))
    merges = []
    for merge in model.get("merges", []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        merges.append((_symbols_to_bytes(left) or b"", _symbols_to_bytes(right) or b""))
    ranks, rank_ids = _ranks_from_merges(vocab, merges, keep_unmerged=bool(model.get("ignore_merges")))

    specials = {t["content"]: int(t["id"]) for t in data.get("added_tokens", [])}
    config = _read_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").exists() else {}
    model_config = _read_json(path / "config.json") if (path / "config.json").exists() else {}
    model_config = model_config.get("text_config", model_config) if "eos_token_id" not in model_config else model_config
    generation = _read_json(path / "generation_config.json") if (path / "generation_config.json").exists() else {}

    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: transformers uses "default"
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if (path / "chat_template.jinja").exists():
        template = (path / "chat_template.jinja").read_text(encoding="utf-8")

    names = {key: _token_text(config.get(key)) for key in ("bos_token", "eos_token", "unk_token", "pad_token")}
    template_vars = {k: v for k, v in names.items() if v is not None}
    bos_id = specials.get(names["bos_token"] or "", model_config.get("bos_token_id"))
    eos_ids = _ids(generation.get("eos_token_id")) + _ids(model_config.get("eos_token_id"))
    if names["eos_token"] in specials:
        eos_ids.append(specials[names["eos_token"]])
    size = max([*vocab.values(), *specials.values()]) + 1
    return _Vocab(
        name=path.name or "tokenizer",
        pat_str=pat_str,
        ranks=ranks,
        rank_ids=rank_ids,
        specials=specials,
        vocab_size=size,
        bos_id=None if bos_id is None else int(bos_id),
        eos_ids=eos_ids,
        chat_template=template,
        template_vars=template_vars,
        add_prefix_space=prefix,
    )


def _vocab_from_gguf(path: Path) -> _Vocab:
    fields = read_gguf_metadata(path)
    kind = fields.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelError(
            f"{path}: tokenizer type {kind!r} is not supported; scoutdoc reads byte-level BPE (tokenizer.ggml.model = gpt2)"
        )
    pre = fields.get("tokenizer.ggml.pre", "default")
    if pre not in GGUF_PRE_PATTERNS:
        raise ModelError(
            f"{path}: unknown pre-tokenizer {pre!r} (tokenizer.ggml.pre); supported: {', '.join(sorted(GGUF_PRE_PATTERNS))}"
        )
    tokens: list[str] = fields["tokenizer.ggml.tokens"]
    types: list[int] = fields.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab: dict[bytes, int] = {}
    specials: dict[str, int] = {}
    for token_id, (token, token_type) in enumerate(zip(tokens, types)):
        if token_type in (3, 4):  # control / user-defined: matched whole in the text
            specials[token] = token_id
            continue
        raw = _symbols_to_bytes(token)
        if raw is not None:
            vocab.setdefault(raw, token_id)
    merges = []
    for merge in fields.get("tokenizer.ggml.merges", []):
        left, right = merge.split(" ", 1)
        merges.append((_symbols_to_bytes(left) or b"", _symbols_to_bytes(right) or b""))
    ranks, rank_ids = _ranks_from_merges(vocab, merges, keep_unmerged=False)

    def token_at(key: str) -> int | None:
        value = fields.get(f"tokenizer.ggml.{key}")
        return int(value) if value is not None and 0 <= int(value) < len(tokens) else None

    template_vars = {}
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        token_id = token_at(key)
        if token_id is not None:
            template_vars[name] = tokens[token_id]
    eos_ids = [i for i in (token_at("eos_token_id"), token_at("eot_token_id"), token_at("eom_token_id")) if i is not None]
    return _Vocab(
        name=path.stem,
        pat_str=GGUF_PRE_PATTERNS[pre],
        ranks=ranks,
        rank_ids=rank_ids,
        specials=specials,
        vocab_size=len(tokens),
        bos_id=token_at("bos_token_id"),
        eos_ids=eos_ids,
        chat_template=fields.get("tokenizer.chat_template"),
        template_vars=template_vars,
    )


def llama4_special_tokens(first_id: int = 200000) -> dict[str, int]:
    """The 2048 reserved Llama 4 special tokens and their ids, in Meta's order (llama4.md §3.2)."""

    def reserved(name: str, count: int, start: int = 0) -> list[str]:
        return [f"<|{name}_reserved_special_token_{i}|>" for i in range(start, start + count)]

    basic = ["<|begin_of_text|>", "<|end_of_text|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"]
    text = ["<|header_start|>", "<|header_end|>", "<|eom|>", "<|eot|>", "<|step|>"]
    text += reserved("text_post_train", 6) + ["<|python_start|>", "<|python_end|>", "<|finetune_right_pad|>"]
    text += reserved("text_post_train", 61, 8)
    vision = ["<|image_start|>", "<|image_end|>", *reserved("vision", 2), "<|tile_x_separator|>", "<|tile_y_separator|>"]
    vision += [*reserved("vision", 4, 2), "<|image|>", *reserved("vision", 1, 6), "<|patch|>", *reserved("vision", 1041, 7)]
    reasoning = [*reserved("reasoning", 8), "<|reasoning_thinking_start|>", "<|reasoning_thinking_end|>"]
    named = basic + text + vision + reasoning
    names = named + [f"<|reserved_special_token_{i}|>" for i in range(2048 - len(named))]
    return {name: first_id + i for i, name in enumerate(names)}


def _vocab_from_meta(path: Path) -> _Vocab:
    model_file = path if path.is_file() else path / "tokenizer.model"
    if not model_file.exists():
        raise ModelError(f"{path} has no tokenizer.model; copy Meta's tokenizer.model into that directory")
    ranks: dict[bytes, int] = {}
    try:
        for line in model_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{model_file} is not a tiktoken BPE file ({exc}); re-download it") from exc
    if len(ranks) != 200000:
        raise ModelError(
            f"{model_file} has {len(ranks)} tokens; scoutdoc knows the special tokens of Meta's Llama 4 tokenizer "
            "(200000 tokens) only — use the model's tokenizer.json instead"
        )
    specials = llama4_special_tokens(len(ranks))
    return _Vocab(
        name=model_file.parent.name or "llama4",
        pat_str=LLAMA4_PATTERN,
        ranks=ranks,
        rank_ids={r: r for r in ranks.values()},
        specials=specials,
        vocab_size=len(ranks) + len(specials),
        bos_id=specials["<|begin_of_text|>"],
        eos_ids=[specials["<|end_of_text|>"], specials["<|eom|>"], specials["<|eot|>"]],
        chat_template=LLAMA4_CHAT_TEMPLATE,
        template_vars={"bos_token": "<|begin_of_text|>", "eos_token": "<|eot|>"},
    )
