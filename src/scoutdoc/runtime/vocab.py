"""Reading a model's vocabulary from its own files into one `Vocab`: an HF `tokenizer.json`
directory, a GGUF file's `tokenizer.ggml.*` metadata, or Meta's `tokenizer.model`.

Merges become tiktoken ranks. HF merges the adjacent pair that comes first in its merge list;
tiktoken merges the pair whose *concatenation* has the lowest rank. Giving every merged token the
rank of the merge that creates it (single bytes first) makes the two orders agree. tiktoken ranks
are then mapped to the model's token ids through `Vocab.rank_ids`.

Byte-level vocabularies trained with HF may lack a few byte symbols (SmolLM2 has no symbol for
some ASCII control characters); HF silently drops such bytes after pre-tokenization. Those bytes
get rank ids of -1 here, and the tokenizer drops them as HF does.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .gguf import read_gguf_metadata
from .pretokenize import GGUF_PRE_PATTERNS, GPT2_PATTERN, LLAMA4_PATTERN, gpt2_digits_pattern, symbols_to_bytes

# Used when a Meta checkpoint directory has no chat template of its own (llama4.md §3.3).
LLAMA4_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|header_start|>' + message['role'] + '<|header_end|>\n\n' + message['content'] + '<|eot|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|header_start|>assistant<|header_end|>\n\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Vocab:
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
        return gpt2_digits_pattern(bool(steps[0].get("individual_digits", False))), False
    if kinds == ["Split", "ByteLevel"] and not use_regex:
        split = steps[0]
        pattern = (split.get("pattern") or {}).get("Regex")
        if pattern and split.get("behavior") == "Isolated" and not split.get("invert", False):
            return pattern, False
    raise unsupported()


def vocab_from_hf_dir(path: Path) -> Vocab:
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
        raw = symbols_to_bytes(token)
        if raw is None:
            raise ModelError(f"{tok_file}: vocabulary entry {token!r} is not byte-level; only byte-level BPE is supported")
        vocab.setdefault(raw, int(token_id))
    merges = []
    for merge in model.get("merges", []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        merges.append((symbols_to_bytes(left) or b"", symbols_to_bytes(right) or b""))
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
    return Vocab(
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


def vocab_from_gguf(path: Path) -> Vocab:
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
        raw = symbols_to_bytes(token)
        if raw is not None:
            vocab.setdefault(raw, token_id)
    merges = []
    for merge in fields.get("tokenizer.ggml.merges", []):
        left, right = merge.split(" ", 1)
        merges.append((symbols_to_bytes(left) or b"", symbols_to_bytes(right) or b""))
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
    return Vocab(
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


def vocab_from_meta(path: Path) -> Vocab:
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
    return Vocab(
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
