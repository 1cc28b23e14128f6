"""Chunked prefill, the decode loop, sampling, stop conditions and UTF-8-safe text streaming.

Prefill runs in pieces of `prefill_chunk` tokens and asks the model for the last position's
logits only, so activation memory is bounded by the piece size rather than the prompt length (the
vocabulary projection alone would be T x vocab floats otherwise). On chunked-attention models the
default piece is a whole multiple of the attention chunk, so no piece straddles a chunk boundary
needlessly and the chunked layers' KV is filled one whole chunk at a time.
"""

import codecs
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..progress import Progress
from .heap import release_freed_heap
from .kvcache import KVCache

RETHREAD_EVERY = 32  # decode steps between two looks at the machine's load (a look costs microseconds)

# Dense models. On CPU one 2048-token piece prefills ~20% faster than four of 512 (one causal
# attention call instead of a growing number of split ones); its activations stay small next to the KV.
DEFAULT_PREFILL_CHUNK = 2048


class Model(Protocol):
    def __call__(self, ids: torch.Tensor, cache: KVCache, last_only: bool = False, greedy: bool = False) -> torch.Tensor: ...


def default_prefill_chunk(config: object) -> int:
    """The prefill piece size when none is asked for: DEFAULT_PREFILL_CHUNK for dense models; for
    chunked-attention models (Llama 4: `attention_chunk_size` 8192) the smallest multiple of the
    chunk that is at least DEFAULT_PREFILL_CHUNK, so pieces start and end on chunk boundaries."""
    chunk = getattr(config, "attention_chunk_size", None)
    uses_rope = getattr(config, "layer_uses_rope", None) or []
    if not chunk or not any(uses_rope):
        return DEFAULT_PREFILL_CHUNK
    return chunk * max(1, -(-DEFAULT_PREFILL_CHUNK // chunk))


@dataclass
class Session:
    """A conversation's state: the cache and the token ids whose keys/values it holds."""

    cache: KVCache
    ids: list[int] = field(default_factory=list)

    def common_prefix(self, ids: list[int]) -> int:
        n = 0
        for a, b in zip(self.ids, ids):
            if a != b:
                break
            n += 1
        return n


@dataclass
class Sampling:
    """How the next token is picked. The repetition guards are off by default here (the runtime
    generates what the model says); scoutdoc's own defaults (`engines.GenerationParams`) turn them on."""

    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k cut
    seed: int | None = None
    repetition_penalty: float = 1.0  # > 1 makes tokens already in the answer less likely (not the prompt's)
    loop_window: int = 0  # stop once the answer's last this-many tokens repeat an earlier run of it; 0: never


def prefill(
    model: Model,
    session: Session,
    ids: list[int],
    chunk: int | None = None,
    progress: Progress | None = None,
    threads: Callable[[], int] | None = None,
) -> torch.Tensor:
    """Extend the session with ids (which must start with session.ids); fp32 logits of the last position.

    At least the final token is always run through the model so there are logits to sample from.
    `chunk` None means `default_prefill_chunk` of the model's config. `progress` gets the tokens
    done and the total after every piece (the caller derives tokens/s from its own clock).
    `threads`: asked before every piece how many threads to run it with (`threads.LoadWatch`).
    """
    if ids[: len(session.ids)] != session.ids:
        raise ValueError("prefill ids must extend the session's ids; start a new session to rewind")
    todo = ids[len(session.ids) :]
    if not todo:
        raise ValueError("nothing to prefill: the session already holds all of these tokens")
    device = _device_of(model)
    chunk = chunk or default_prefill_chunk(getattr(model, "config", None))
    session.cache.reserve(len(ids))
    total, done = len(todo), 0
    logits = None
    with torch.inference_mode():
        while done < total:
            _set_threads(threads)
            piece = todo[done : done + chunk]
            logits = model(torch.tensor(piece, dtype=torch.long, device=device), session.cache, last_only=True)
            session.ids.extend(piece)
            done += len(piece)
            if device.type == "cpu":
                release_freed_heap()  # a piece's activations would otherwise stay resident beside the growing KV
            if progress is not None:
                progress(done, total, "tokens")
    return logits[-1].float()


def _set_threads(threads: Callable[[], int] | None) -> None:
    if threads is not None:
        count = threads()
        if count != torch.get_num_threads():
            torch.set_num_threads(count)


def _device_of(model: Model) -> torch.device:
    return next(model.parameters()).device  # type: ignore[attr-defined]


def penalize(logits: torch.Tensor, answer: list[int], penalty: float) -> torch.Tensor:
    """The CTRL-style repetition penalty over the tokens generated so far: their positive logits divided
    by `penalty`, negative ones multiplied. Only the answer counts: an answer about a document must
    be free to repeat the document's words, just not itself."""
    if penalty == 1.0 or not answer:
        return logits
    seen = torch.tensor(sorted(set(answer)), device=logits.device)
    picked = logits[seen]
    return logits.index_put((seen,), torch.where(picked > 0, picked / penalty, picked * penalty))


def sample(logits: torch.Tensor, params: Sampling, generator: torch.Generator | None) -> int:
    """Greedy when temperature is 0, otherwise temperature -> top-k -> top-p -> multinomial."""
    if params.temperature <= 0:  # max's index is argmax's (the first of equal values), 3x faster on a CPU
        return int(logits.max(dim=-1).indices)
    logits = logits.float() / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of strictly more likely tokens
        sorted_probs = sorted_probs.masked_fill(before >= params.top_p, 0.0)  # always keeps the first
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def make_generator(params: Sampling, device: torch.device) -> torch.Generator | None:
    if params.temperature <= 0:
        return None
    gen = torch.Generator(device=device)
    if params.seed is None:
        gen.seed()
    else:
        gen.manual_seed(params.seed)
    return gen


def generate_ids(
    model: Model,
    session: Session,
    ids: list[int],
    max_new_tokens: int,
    sampling: Sampling | None = None,
    stop_ids: Iterable[int] = (),
    prefill_chunk: int | None = None,
    progress: Progress | None = None,
    logits: torch.Tensor | None = None,
    threads: Callable[[], int] | None = None,
) -> Iterator[int]:
    """Yield new token ids until a stop id (not yielded), or max_new_tokens.

    The session's cache holds every yielded token except the last one (it is fed to the model only
    when the next token is needed), so `session.ids` always names exactly what the cache contains.
    `logits`: the last position's logits from a caller that already prefilled all of `ids` (so the
    first answer token costs no extra forward pass). `threads`: asked before every prompt piece,
    the first decode step and every RETHREAD_EVERY steps how many threads to run with
    (`threads.LoadWatch`).
    """
    sampling = sampling or Sampling()
    stop = set(stop_ids)
    device = _device_of(model)
    generator = make_generator(sampling, device)
    session.cache.reserve(len(ids) + max_new_tokens - 1)  # the last answer token is never fed back
    if logits is None:
        logits = prefill(model, session, ids, prefill_chunk, progress, threads)
    elif session.ids != ids:
        raise ValueError("logits were given but the session does not hold exactly these ids")
    answer: list[int] = []
    greedy = sampling.temperature <= 0  # only the best logits need be exact (`model.Transformer.forward`)
    for n in range(max_new_tokens):
        token = sample(penalize(logits, answer, sampling.repetition_penalty), sampling, generator)
        if token in stop:
            return
        answer.append(token)
        yield token
        if n + 1 == max_new_tokens:
            return
        if n % RETHREAD_EVERY == 0:
            _set_threads(threads)
        with torch.inference_mode():
            logits = model(torch.tensor([token], device=device), session.cache, greedy=greedy)[-1].float()
        session.ids.append(token)


class TextStream:
    """Turns token ids into text pieces that never split a UTF-8 character.

    Uses the tokenizer's byte-level `decode_bytes(ids)` with an incremental UTF-8 decoder, so an
    emoji spread over three tokens is emitted once complete. Tokenizers without byte access fall
    back to decoding the whole tail and holding back a trailing replacement character.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.byte_level = hasattr(tokenizer, "decode_bytes")
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.ids: list[int] = []
        self.emitted = 0

    def push(self, token: int) -> str:
        if self.byte_level:
            return self.decoder.decode(self.tokenizer.decode_bytes([token]))
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        piece, self.emitted = text[self.emitted :], len(text)
        return piece

    def flush(self) -> str:
        if self.byte_level:
            return self.decoder.decode(b"", final=True)
        text = self.tokenizer.decode(self.ids)
        piece, self.emitted = text[self.emitted :], len(text)
        return piece


class StopMatcher:
    """Holds back text that could be the start of a stop string; reports when one is complete."""

    def __init__(self, stops: Iterable[str]):
        self.stops = [s for s in stops if s]
        self.buffer = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Text that is safe to emit now; sets `stopped` (and drops the stop string) on a match."""
        self.buffer += text
        if not self.stops:
            out, self.buffer = self.buffer, ""
            return out
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.buffer = self.buffer[: min(hits)], ""
            return out
        keep = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.buffer)), 0, -1):
                if self.buffer.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        out, self.buffer = self.buffer[: len(self.buffer) - keep], self.buffer[len(self.buffer) - keep :]
        return out

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


_LEADING_PUNCT = re.compile(r"[.!?;:,)\]\"'…]*\s*")
SENTENCE_WORDS = 4  # a repeated sentence this long or longer ends the answer ("Yes." may come twice)
# A list item's number or bullet alone at the end of a line so far ("\n11. "): shown with the item
# it starts, and dropped when the item turns out to repeat an earlier one and the answer stops there.
_BARE_MARKER = re.compile(r"(?:\A|\n)([ \t]*(?:\d{1,3}[.)]?|[-*•])[ \t]*)\Z")
_ENDS = (".", "!", "?")


def _repeats_a_sentence(said: str, held: list[str], repeating: int) -> bool:
    """Whether the latest `repeating` tokens, which repeat an earlier run of the answer, are a whole
    sentence of it said again: the run starts where a sentence starts and has just ended one. A
    sentence is usually shorter than the loop window, and a small model that says one twice goes on
    to say it (or the ones around it) again and again."""
    run = "".join(held[len(held) - repeating:])
    lead = _LEADING_PUNCT.match(run).group(0)
    before = (said + "".join(held[: len(held) - repeating]) + lead).rstrip()
    sentence = run[len(lead):].strip()
    return (sentence.endswith(_ENDS) and len(sentence.split()) >= SENTENCE_WORDS
            and (not before or before.endswith(_ENDS + (":",))))


class LoopGuard:
    """Notices an answer going round in circles: `push` returns how many of the latest tokens repeat,
    token for token, an earlier run of the answer (0 when the latest token is new there).

    `runs[i]` is the length of the common run ending at earlier position i and at the latest token,
    updated in one pass per token, so a 512-token answer costs about 130k comparisons in all.
    """

    def __init__(self, window: int):
        self.window = window
        self.tokens: list[int] = []
        self.runs: list[int] = []

    def push(self, token: int) -> int:
        runs = self.runs
        new = [0] * len(self.tokens)
        for i, seen in enumerate(self.tokens):
            if seen == token:
                new[i] = min(self.window, (runs[i - 1] if i else 0) + 1)
        self.tokens.append(token)
        new.append(0)
        self.runs = new
        return max(new)


@dataclass
class TextGeneration:
    """Iterate to stream text; afterwards `finish_reason` is "stop", "length" or "repeat" and `new_ids`
    the tokens generated.

    With `loop_window` > 0 the text of tokens that repeat an earlier run of the answer is held back
    until the run breaks; when it reaches `loop_window` tokens, or is a whole sentence of the answer
    said again, the answer is going in circles: generation stops ("repeat") and the held-back
    repetition is dropped, so the answer ends after the first time it said what it then kept saying.
    So is a list item's number that the repetition would have followed (`_BARE_MARKER`).
    """

    token_source: Callable[[], Iterator[int]]
    tokenizer: object
    stop: list[str]
    max_new_tokens: int
    loop_window: int = 0
    finish_reason: str = ""
    new_ids: list[int] = field(default_factory=list)

    def __iter__(self) -> Iterator[str]:
        stream, matcher = TextStream(self.tokenizer), StopMatcher(self.stop)
        guard = LoopGuard(self.loop_window) if self.loop_window > 0 else None
        held: list[str] = []  # text of the latest tokens, while they repeat an earlier run
        said = ""  # the end of the text released so far: enough to see whether it ended a sentence
        marker = ""  # a list item's number released but not yet shown, until its item shows it is new
        shown_end = ""  # the end of the text shown, after a NUL once there is any: where a line starts
        self.finish_reason = "stop"
        source = self.token_source()
        try:
            for token in source:
                self.new_ids.append(token)
                held.append(stream.push(token))
                repeating = guard.push(token) if guard is not None else 0
                if repeating and (repeating >= guard.window or _repeats_a_sentence(said, held, repeating)):
                    self.finish_reason = "repeat"
                    # The repeated run can start with the punctuation that ended the first round
                    # ("…2,400" + ". The fee…"): that much of it still belongs to the answer.
                    dropped = "".join(held[len(held) - repeating:])
                    kept = "".join(held[: len(held) - repeating])
                    ending = "" if marker and not kept.strip() else marker + kept + _LEADING_PUNCT.match(dropped).group(0)
                    tail = matcher.feed(ending)
                    tail += "" if matcher.stopped else matcher.flush()
                    if tail:
                        yield tail
                    return
                release, held = held[: len(held) - repeating], held[len(held) - repeating:]
                said = (said + "".join(release))[-16:]
                text = marker + "".join(release)
                bare = _BARE_MARKER.search(shown_end + text)
                cut = bare.start(1) - len(shown_end) if bare and bare.start(1) >= len(shown_end) else len(text)
                shown, marker = text[:cut], text[cut:]
                if shown:
                    shown_end = "\0" + (shown_end[1:] + shown)[-16:]
                piece = matcher.feed(shown)
                if piece:
                    yield piece
                if matcher.stopped:
                    return
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        if len(self.new_ids) >= self.max_new_tokens:
            self.finish_reason = "length"
        tail = matcher.feed(marker + "".join(held) + stream.flush())
        if not matcher.stopped:
            tail += matcher.flush()
        if tail:
            yield tail
