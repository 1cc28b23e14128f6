"""Our runtime against transformers on tiny random checkpoints saved by transformers (fp32, batch 1).

Each comparison covers a full forward over 5+ attention chunks and a prefill followed by
token-by-token decode across chunk boundaries, checked step by step against HF's full forward.
"""

import pytest
import torch

from scoutdoc.runtime import load_model

TOL = 1e-4


@pytest.fixture(scope="module", params=["llama4", "llama"])
def pair(request, tiny, tmp_path_factory):
    hf = tiny.llama4() if request.param == "llama4" else tiny.llama()
    path = tiny.save(hf, tmp_path_factory.mktemp(request.param))
    return hf, load_model(path, dtype="float32", device="cpu")


def reference(hf, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(ids[None]).logits[0].float()


def test_full_forward_matches_transformers(pair):
    hf, ours = pair
    ids = torch.randint(0, hf.config.vocab_size, (44,), generator=torch.Generator().manual_seed(1))
    assert (ours.logits(ids) - reference(hf, ids)).abs().max() <= TOL


@pytest.mark.parametrize("prefill_len, chunk", [(13, 5), (8, 8), (1, 512)])
def test_prefill_then_decode_matches_full_forward(pair, prefill_len, chunk):
    hf, ours = pair
    ids = torch.randint(0, hf.config.vocab_size, (42,), generator=torch.Generator().manual_seed(2))
    ref = reference(hf, ids)
    session, last = ours.prefill(ids[:prefill_len].tolist(), chunk=chunk)
    assert (last - ref[prefill_len - 1]).abs().max() <= TOL
    for p in range(prefill_len, len(ids)):  # crosses the 8-token chunk boundaries at 16, 24, 32, 40
        with torch.inference_mode():
            step = ours.module(ids[p : p + 1], session.cache)[-1].float()
        assert (step - ref[p]).abs().max() <= TOL, f"position {p}"
    assert session.cache.length == len(ids)


def test_llama4_features_are_exercised(pair):
    """Guard against a parity test that passes because a feature is inert on this config."""
    hf, ours = pair
    if ours.config.arch != "llama4":
        pytest.skip("llama4 only")
    c = ours.config
    assert c.use_qk_norm and c.attn_temperature_tuning and c.rope_scaling and c.attention_chunk_size == 8
    assert c.layer_uses_rope == [True, False, True, False] and c.layer_is_moe == [False, True, True, False]
    ids = torch.randint(0, c.vocab_size, (40,), generator=torch.Generator().manual_seed(3))
    base = ours.logits(ids)
    c.attention_chunk_size = None  # same weights, chunking off: logits must move a lot
    try:
        assert (ours.logits(ids) - base).abs().max() > 0.1
    finally:
        c.attention_chunk_size = 8
