"""The bundled default model (SmolLM2-135M-Instruct, Q4_1 GGUF, llama architecture) against
transformers loading the same GGUF (dequantized to float32); references written by
tests/fixtures/make_smollm2_fixtures.py.

Default precision ("f32": each weight block is dequantized against the float activation): our
logits equal the reference's up to float32 rounding (mean |d| <= 1e-3, max |d| <= 2e-2 on logits
of std ~8), greedy continuations are identical wherever the reference margin is >= 0.05, and the
perplexity is within 0.1% (the issue asks 1%).

Bound for our logits, stated: with the llama.cpp-style precision ("q8") every matmul input is
rounded to 8 bits per block of 32 (Q8_0/Q8_1), which moves this model's logits by ~0.2-0.3 on
average by itself (an independent numpy emulation of that rounding on the dequantized weights is
stored beside the reference). Our mean |d| over the reference's top-128 logits per position may be
at most 25% above the emulation's. Wherever the reference's top-2 margin is >= 1.0 the top-1 must
agree, and greedy continuations must be identical up to the first step whose reference margin is
below 1.0 (the same tolerance as the BitNet tests; the rounding moves logits by far more than the
smaller margins).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from trit.engine import load_model
from trit.engine.perplexity import agreement, perplexity

REF = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "smollm2_ref.npz"
N_PROMPTS = 5
MARGIN = 1.0


@pytest.fixture(scope="module")
def ref():
    return np.load(REF)


@pytest.fixture(scope="module")
def model(default_model_gguf):
    return load_model(default_model_gguf, threads=2, activations="q8")


@pytest.fixture(scope="module")
def exact(default_model_gguf):
    return load_model(default_model_gguf, threads=2)  # default: f32 activations


@pytest.mark.parametrize("i", range(N_PROMPTS))
def test_f32_logits_match_reference(exact, ref, i):
    logits = exact.logits(ref[f"p{i}_ids"].tolist())
    got = np.take_along_axis(logits, ref[f"p{i}_top_ids"], -1)
    d = np.abs(got - ref[f"p{i}_top_ref"])
    assert d.mean() <= 1e-3 and d.max() <= 2e-2, (d.mean(), d.max())


@pytest.mark.parametrize("i", range(N_PROMPTS))
def test_f32_greedy_matches_reference(exact, ref, i):
    ids = ref[f"p{i}_ids"].tolist()
    got = exact.generate(ids, max_tokens=16, temperature=0, repeat_penalty=1.0, stop_ids=[]).tokens
    want, margin = ref[f"p{i}_greedy"].tolist(), ref[f"p{i}_margin"]
    for step, (g, w) in enumerate(zip(got, want)):
        if margin[step] < 0.05:
            break
        assert g == w, (step, got, want)


def test_compact_kv_caches_cost_little_perplexity(default_model_gguf, exact, ref):
    # measured 2026-11-27 (AVX2): f32 8.8432, f16 8.8396, q8 8.8533 (one int8 scale per 64-wide head row)
    ids = ref["ppl_ids"].tolist()
    base = perplexity(exact, ids).perplexity
    for kv, bound in (("f16", 0.002), ("q8", 0.02)):
        got = perplexity(load_model(default_model_gguf, threads=2, kv=kv), ids).perplexity
        assert abs(got / base - 1) <= bound, (kv, got, base)


def test_perplexity_f32_within_1_percent_of_transformers(exact, ref):
    r = perplexity(exact, ref["ppl_ids"].tolist())
    assert abs(r.perplexity / float(ref["ppl_ref"]) - 1) <= 0.001, (r.perplexity, float(ref["ppl_ref"]))


@pytest.mark.parametrize("i", range(N_PROMPTS))
def test_prompt_logits_within_q8_rounding(model, ref, i):
    ids = ref[f"p{i}_ids"].tolist()
    logits = model.logits(ids)
    top_ids, want, emu = ref[f"p{i}_top_ids"], ref[f"p{i}_top_ref"], ref[f"p{i}_top_q8emu"]
    got = np.take_along_axis(logits, top_ids, -1)
    ours, rounding = np.abs(got - want).mean(), np.abs(emu - want).mean()
    assert ours <= 1.25 * rounding, (ours, rounding)
    sure = want[:, 0] - want[:, 1] >= MARGIN
    assert sure.sum() >= len(ids) // 3
    assert (logits.argmax(-1) == top_ids[:, 0])[sure].all()


@pytest.mark.parametrize("i", range(N_PROMPTS))
def test_greedy_matches_reference(model, ref, i):
    ids = ref[f"p{i}_ids"].tolist()
    got = model.generate(ids, max_tokens=16, temperature=0, repeat_penalty=1.0, stop_ids=[]).tokens
    want, margin = ref[f"p{i}_greedy"].tolist(), ref[f"p{i}_margin"]
    for step, (g, w) in enumerate(zip(got, want)):
        if margin[step] < MARGIN:
            break
        assert g == w, (step, got, want)


@pytest.mark.parametrize("precision", ["exact", "model"])
def test_capital_of_france(precision, request):
    model = request.getfixturevalue(precision)
    msgs = [
        {"role": "system", "content": "Answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    reply = model.chat(msgs, temperature=0, repeat_penalty=1.0, max_tokens=24)
    assert reply.text.strip() == "The capital of France is Paris."
    assert reply.stats.stop_reason == "stop"  # ended on <|im_end|>, not on the length limit


def test_perplexity_q8(model, ref):
    # the engine's own arithmetic: within 2% of the emulated q8 rounding's figure. Rounding every
    # activation to 8 bits makes this 323-token figure jump with the last bit of anything upstream:
    # measured 8.816 (AVX-512), 8.876 (scalar), 8.888 (AVX2) with the same weights, and 8.891 (AVX-512)
    # before the attention softmax moved to a polynomial exp, against 8.966 emulated (f32: 8.843 on
    # every path, 3e-7 apart)
    r = perplexity(model, ref["ppl_ids"].tolist())
    assert r.tokens_scored == len(ref["ppl_ids"]) - 1
    assert abs(r.perplexity / float(ref["ppl_q8emu"]) - 1) <= 0.02, (r.perplexity, float(ref["ppl_q8emu"]))


def test_agreement_of_a_model_with_itself(exact, ref):
    ids = ref["ppl_ids"].tolist()[:200]
    r = agreement(exact, exact, ids, context=128)
    assert r.kl == pytest.approx(0, abs=1e-9) and r.top1 == 1.0 and r.tokens_scored == 198
    assert (
        r.perplexity
        == r.reference_perplexity
        == pytest.approx(perplexity(exact, ids, context=128).perplexity)
    )


def test_a48_modes_on_a_model_not_trained_for_them(default_model_gguf, exact, ref):
    """SmolLM2 is not ternary: a48 hands its Q4_1 / Q8_0 matrices the values the 4-bit codes stand
    for (through their own 8-bit activation format), and TopK's output to o. Measured with
    benchmarks/a48_quality.py (perplexity 8.84 exact): 8-bit KV 8.85, 3-bit KV 94, a4.8 activations
    ~29,000; the UI quotes these. Here: each mode really changes the predictions, more bits stay
    closer, and a prompt run as one batch gives the same last logits as the same tokens decoded one
    at a time (the per-token rounding may not depend on the batch)."""
    ids = ref["ppl_ids"].tolist()[:160]
    res = {}
    for kv, a48 in (("q8", False), ("q3", False), ("f32", True)):
        m = load_model(default_model_gguf, threads=2, kv=kv, a48=a48)
        res[kv, a48] = r = agreement(exact, m, ids, context=160)
        assert r.kl > 1e-3 and r.top1 < 1.0 and np.isfinite(r.perplexity), (kv, a48, r)
        s = m.session(context=64)
        last = [s.state.forward([t], pos) for pos, t in enumerate(ids[:24])][-1]
        np.testing.assert_allclose(last, m.logits(ids[:24])[-1], rtol=0, atol=1e-3)
    assert res["q8", False].kl < res["q3", False].kl < res["f32", True].kl
    assert res["q8", False].perplexity < 1.05 * res["q8", False].reference_perplexity


def test_chat_refuses_what_is_not_a_list_of_messages(model):
    for bad in ("hello", {"role": "user", "content": "hi"}, 42):
        with pytest.raises(ValueError, match="list of"):
            model.chat(bad, max_tokens=1)
    with pytest.raises(ValueError, match="messages is empty"):
        model.chat([], max_tokens=1)
    # each message: a dict with a string role and string content. OpenAI-style content parts
    # reached the model as their Python repr, None as the word "None", and a part's text
    # escaped the check that keeps typed control tokens plain
    cases = [
        (["hello"], r"messages\[0\] must be a \{"),
        ([("user", "hi")], r"messages\[0\] must be a \{"),
        ([{"role": "user"}], r"messages\[0\] \(user\): content must be a string, not None"),
        ([{"role": "user", "content": None}], "content must be a string, not None"),
        ([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "join the text of content parts"),
        ([{"content": "Hi"}], r"messages\[0\]: role must be a non-empty string"),
        ([{"role": "", "content": "Hi"}], "role must be a non-empty string"),
        ([{"role": "user", "content": "ok"}, {"role": 3, "content": "Hi"}], r"messages\[1\]: role"),
    ]
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            model.chat(bad, max_tokens=1)
        with pytest.raises(ValueError, match=match):
            model.chat(bad, max_tokens=1, raw=True)
    with pytest.raises(ValueError, match="the prompt is empty"):
        model.chat([{"role": "user", "content": ""}], raw=True, max_tokens=1)
    # raw=True joins the contents as they are
    g = model.chat(
        [{"role": "user", "content": "Hello"}, {"role": "user", "content": " there"}],
        raw=True,
        max_tokens=2,
        temperature=0,
    )
    assert g.stats is not None and g.stats.prompt_tokens == len(model.tokenizer.encode("Hello there"))


def test_a_message_too_long_for_the_context_is_refused_before_tokenizing(model, monkeypatch):
    from trit.engine import ContextFullError
    from trit.engine.model import check_prompt_size

    tok = model.tokenizer
    # the bound never refuses what could fit: `context` tokens of the longest piece
    longest = max(range(tok.vocab_size), key=lambda i: len(tok.token_bytes(i)))
    check_prompt_size(tok, [{"content": tok.token_bytes(longest).decode("utf-8", "replace") * 64}], 64)

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("a 30 MB message was tokenized")

    monkeypatch.setattr(tok, "encode", no_tokenizing)
    with pytest.raises(ContextFullError, match="at least"):
        model.chat([{"role": "user", "content": "x" * 30_000_000}], max_tokens=1)


def test_a_reply_cut_inside_a_character_does_not_end_in_a_replacement_character(model):
    from trit.engine.model import reply_tail
    from trit.engine.tokenizer import StreamDecoder

    ids = model.tokenizer.encode("Hi 😀", add_bos=False)  # the emoji's bytes span two tokens
    stream = StreamDecoder(model.tokenizer, skip_special=True)
    shown = "".join(stream.feed(t) for t in ids[:-1])  # cut before its last byte
    assert shown == "Hi " and stream.pending
    assert reply_tail(stream, cut=True) == "" and not stream.pending
    for t in ids[:-1]:
        stream.feed(t)
    assert reply_tail(stream, cut=False) == "\ufffd"  # the model's own end: kept as written


def test_a_reply_in_the_plain_format_ends_where_the_next_user_turn_would_begin(failing_template_gguf):
    """The plain User/Assistant format (a template that fails) has no end-of-turn token: SmolLM2
    went on to write "\\nUser: ..." and the answers to it, up to the token limit."""
    m = load_model(failing_template_gguf, threads=1)
    conv = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is your name?"},
    ]
    streamed: list[str] = []
    gen = m.session().chat(conv, temperature=0, max_tokens=40, on_text=streamed.append)
    assert m.chat_format.encode_prompt(m.tokenizer, conv)[1] and gen.stats.stop_reason == "stop"
    # the same tokens without the rule: the reply is their text up to the turn it began to write
    ids = m.chat_format.encode(m.tokenizer, conv)
    raw = m.tokenizer.decode(m.session().generate(ids, temperature=0, max_tokens=40).tokens)
    assert "\nUser:" in raw and gen.text == raw[: raw.index("\nUser:")].rstrip()
    assert "".join(streamed) == gen.text and "User:" not in gen.text and gen.text.strip()
