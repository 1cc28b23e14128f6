"""The real default model (SmolLM2-135M-Instruct Q4_1 GGUF): our runtime against transformers reading the same file.

Both sides dequantize the GGUF to float32, so the only differences are float summation order.
"""

import pytest
import torch

from scoutdoc.runtime import load_model

pytestmark = pytest.mark.slow
TOL = 2e-4  # measured max |Δlogit| ≈ 8e-5 on logits of magnitude ~35


@pytest.fixture(scope="module")
def hf_side(smollm2_gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=smollm2_gguf.name)
    tok = AutoTokenizer.from_pretrained(smollm2_gguf.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, dtype=torch.float32, **kwargs).eval()
    return tok, model


@pytest.fixture(scope="module")
def ours(smollm2_gguf):
    return load_model(smollm2_gguf, dtype="float32", device="cpu")


def test_config_read_from_gguf_metadata(ours):
    c = ours.config
    assert (c.arch, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.vocab_size) == (
        "llama", 30, 576, 9, 3, 49152
    )
    assert c.tie_word_embeddings and c.rope_theta == 100000.0


def test_logits_match_transformers(ours, hf_side):
    _, hf = hf_side
    ids = torch.randint(0, 49152, (96,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(ids[None]).logits[0]
    assert (ours.logits(ids) - ref).abs().max() <= TOL


def test_greedy_tokens_match_transformers(ours, hf_side):
    tok, hf = hf_side
    messages = [{"role": "user", "content": "Write a short poem about the sea and the wind."}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    prompt = list(prompt["input_ids"] if isinstance(prompt, dict) else prompt)
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)
    expected = out[0, len(prompt) :].tolist()
    expected = [t for t in expected if t != tok.eos_token_id]
    got = list(ours.generate(prompt, max_new_tokens=32, stop_ids=[tok.eos_token_id], prefill_chunk=7))
    assert len(got) == 32
    assert got == expected


def test_catalog_name_resolves_to_the_same_model(ours, smollm2_gguf, monkeypatch):
    from scoutdoc.engines.embedded import locate

    monkeypatch.setenv("SCOUTDOC_MODELS", str(smollm2_gguf.parent))
    path, name = locate("smollm2-135m")
    assert name == "smollm2-135m"  # what messages call it: the catalog name, not the GGUF's own
    assert load_model(path, dtype="float32", device="cpu") is ours


def test_streaming_with_the_real_tokenizer_keeps_characters_whole(ours):
    from scoutdoc.runtime.generate import TextStream

    text = "Café 🙂 漢字 naïve"
    ids = ours.tokenizer.encode(text)
    assert len(ids) > len(text.split())  # the emoji and the CJK characters span several byte-level tokens
    stream = TextStream(ours.tokenizer)
    pieces = [stream.push(t) for t in ids] + [stream.flush()]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
