"""training.ml.sampling: prompt building, the sampler, batching and reproducibility (pure torch,
no database), on the tiny random Llama of conftest."""
from __future__ import annotations

import pytest
import torch

from training.ml import sampling as G


def _req(lm, text, *, key, seed=1, temperature=0.8, top_p=0.9, max_new_tokens=16, template="plain", system=""):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    ids = G.encode_chat(lm.tokenizer, G.build_chat(messages, [], template))
    return G.SampleRequest(key=key, input_ids=tuple(ids), temperature=temperature, top_p=top_p, seed=seed,
                           max_new_tokens=max_new_tokens)


# --- Prompt building -------------------------------------------------------------------------

def test_build_chat_puts_system_documents_history_and_template_in_place():
    messages = [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4, arr."},
        {"role": "user", "content": "And 3+3?"},
    ]
    documents = [{"title": "Arithmetic", "text": "3+3 is 6."}, {"title": "", "text": "Untitled note."}]
    chat = G.build_chat(messages, documents, "step_by_step")
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    assert chat[0]["content"].startswith("Answer like a pirate.")
    assert "Reference documents:" in chat[0]["content"]
    assert "[1] Arithmetic\n3+3 is 6." in chat[0]["content"] and "[2] Untitled note." in chat[0]["content"]
    assert chat[1:3] == messages[1:3]  # few-shot examples / history untouched
    assert chat[3]["content"] == "And 3+3?\n\nThink step by step."
    assert messages[3]["content"] == "And 3+3?"  # the input is not modified


def test_build_chat_without_system_adds_documents_as_system_and_plain_changes_nothing():
    chat = G.build_chat([{"role": "user", "content": "Hi"}], [], "plain")
    assert chat == [{"role": "user", "content": "Hi"}]
    chat = G.build_chat([{"role": "user", "content": "Hi"}], [{"title": "T", "text": "x"}], "plain")
    assert chat[0]["role"] == "system" and "[1] T\nx" in chat[0]["content"]


def test_build_chat_rejects_unknown_template_and_missing_question():
    with pytest.raises(ValueError, match="Unknown prompt template"):
        G.build_chat([{"role": "user", "content": "Hi"}], [], "nonsense")
    with pytest.raises(ValueError, match="end with a user turn"):
        G.build_chat([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], [], "plain")


def test_encode_chat_applies_the_chat_template_and_keeps_the_end_of_long_prompts(tiny_lm):
    tok = tiny_lm.tokenizer
    ids = G.encode_chat(tok, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}])
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    short = G.encode_chat(tok, [{"role": "user", "content": "word " * 200}], max_prompt_tokens=20)
    assert len(short) == 20 and tok.decode(short).endswith("<|im_start|>assistant\n")


def test_encode_chat_without_a_chat_template_uses_a_plain_transcript(tiny_lm):
    tok = tiny_lm.tokenizer
    saved = tok.chat_template
    tok.chat_template = None
    try:
        ids = G.encode_chat(tok, [{"role": "user", "content": "Hello"}])
    finally:
        tok.chat_template = saved
    assert tok.decode(ids) == "Human: Hello\n\nAssistant:"  # the exports' transcript too


# --- Sampler ---------------------------------------------------------------------------------

def test_sampler_greedy_rows_take_the_argmax_and_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05]]))
    temperature = torch.tensor([0.0, 1.0])
    top_p = torch.tensor([1.0, 0.7])  # nucleus of row 1: {0, 1} (0.5 < 0.7, 0.5 + 0.3 >= 0.7)
    seen = set()
    for u in torch.linspace(0, 0.999, 50):
        tokens = G.sample_next_tokens(logits, temperature, top_p, torch.tensor([u, u]))
        assert tokens[0] == 0
        seen.add(int(tokens[1]))
    assert seen == {0, 1}


def test_sampler_inverse_cdf_matches_the_distribution_with_top_p_one():
    probs = torch.tensor([[0.1, 0.6, 0.3]])
    logits = probs.log()
    picks = [int(G.sample_next_tokens(logits, torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([u]))[0])
             for u in (0.05, 0.15, 0.69, 0.71, 0.99)]
    assert picks == [0, 1, 1, 2, 2]  # id-order CDF: [0.1, 0.7, 1.0]


def test_sampler_falls_back_to_a_full_sort_when_the_nucleus_is_wider_than_the_probe():
    torch.manual_seed(0)
    logits = torch.zeros(2, 1000)  # uniform: the 0.9 nucleus holds 900 tokens
    tokens = G.sample_next_tokens(logits, torch.tensor([1.0, 1.0]), torch.tensor([0.9, 0.9]),
                                  torch.tensor([0.0, 0.999]), probe=16)
    assert 0 <= int(tokens[0]) < 1000 and 0 <= int(tokens[1]) < 1000


# --- Batching, reproducibility -----------------------------------------------------------------

def test_generate_returns_results_in_request_order_with_their_budgets(tiny_lm):
    requests = [_req(tiny_lm, "Short?", key="a", max_new_tokens=5),
                _req(tiny_lm, "A much longer question about the sea and the stars at night?", key="b",
                     max_new_tokens=9),
                _req(tiny_lm, "Mid length question here?", key="c", max_new_tokens=1)]
    results = G.generate(tiny_lm.model, tiny_lm.tokenizer, requests)
    assert [r.key for r in results] == ["a", "b", "c"]
    for req, res in zip(requests, results):
        assert res.tokens <= req.max_new_tokens
        assert res.finish_reason in ("stop", "length")
        if res.finish_reason == "length":
            assert res.tokens == req.max_new_tokens
        assert res.prompt_tokens == len(req.input_ids)


def test_generated_text_never_holds_a_nul_character(tiny_lm, monkeypatch):
    """A model can emit the NUL byte's token; PostgreSQL text and jsonb cannot store it (a tiny
    model's answer in a win-rate example once failed a run on PostgreSQL)."""
    monkeypatch.setattr(type(tiny_lm.tokenizer), "decode", lambda self, ids, **kw: " an\x00swer\x00 ")
    (result,) = G.generate(tiny_lm.model, tiny_lm.tokenizer, [_req(tiny_lm, "Hi?", key="a", max_new_tokens=3)])
    assert result.text == "answer"


def test_same_seed_reproduces_whatever_the_batch(tiny_lm):
    """A row's text depends on its seed and parameters, not on the rows batched with it."""
    target = _req(tiny_lm, "What is the capital of France?", key="t", seed=1234, max_new_tokens=24)
    alone = G.generate(tiny_lm.model, tiny_lm.tokenizer, [target])[0]
    others = [_req(tiny_lm, f"Other question number {i} " + "with padding " * i, key=i, seed=i,
                   max_new_tokens=4 + i) for i in range(6)]
    mixed = G.generate(tiny_lm.model, tiny_lm.tokenizer, others[:3] + [target] + others[3:],
                       config=G.GenerationConfig(max_batch_rows=7))
    in_batch = next(r for r in mixed if r.key == "t")
    assert in_batch.batch_rows == 7
    assert in_batch.token_ids == alone.token_ids and in_batch.text == alone.text
    again = G.generate(tiny_lm.model, tiny_lm.tokenizer, [target, others[0]])[0]
    assert again.token_ids == alone.token_ids


def test_different_seeds_give_different_samples(tiny_lm):
    requests = [_req(tiny_lm, "Write a poem about the sea.", key=s, seed=s, temperature=1.0, top_p=1.0,
                     max_new_tokens=16) for s in range(4)]
    results = G.generate(tiny_lm.model, tiny_lm.tokenizer, requests)
    assert len({tuple(r.token_ids) for r in results}) > 1


def test_greedy_rows_are_deterministic_and_match_hf_generate(tiny_lm):
    req = _req(tiny_lm, "Explain photosynthesis.", key="g", temperature=0.0, max_new_tokens=12)
    ours = G.generate(tiny_lm.model, tiny_lm.tokenizer, [req])[0]
    inputs = torch.tensor([req.input_ids])
    with torch.inference_mode():
        out = tiny_lm.model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), do_sample=False,
                                     max_new_tokens=12, pad_token_id=tiny_lm.tokenizer.pad_token_id)
    hf = [t for t in out[0, inputs.shape[1]:].tolist() if t != tiny_lm.tokenizer.eos_token_id]
    assert ours.token_ids == hf[:len(ours.token_ids)]


def test_a_row_stops_at_its_stop_token(tiny_lm):
    """Force EOS after three tokens by making it the only likely token from then on."""
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    eos = tok.eos_token_id
    calls = {"n": 0}

    def hook(_module, _inputs, output):
        calls["n"] += 1
        if calls["n"] > 3:  # prefill + 2 steps sample freely, then EOS
            output.logits[..., eos] = 1e4
        return output

    handle = model.register_forward_hook(hook)
    try:
        res = G.generate(model, tok, [_req(tiny_lm, "Hi", key=0, max_new_tokens=50)])[0]
    finally:
        handle.remove()
    assert res.finish_reason == "stop"
    assert res.tokens == 3 and eos not in res.token_ids
    assert res.stop_token_id == eos  # which stop token ended it (PPO scores what was sampled)


def test_a_row_reports_which_of_several_stop_tokens_ended_it(tiny_lm):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    request = G.SampleRequest(key=0, input_ids=(5, 6, 7), temperature=0, top_p=1, seed=0, max_new_tokens=3)
    free, _, stopped_with, _ = G.sample_batch(model, [request], pad_id=tok.pad_token_id, stop_ids=set())
    assert stopped_with == [None] and len(free[0]) == 3
    second = free[0][1]
    tokens, reasons, stopped_with, _ = G.sample_batch(model, [request], pad_id=tok.pad_token_id,
                                                      stop_ids={second, tok.eos_token_id})
    assert tokens == [free[0][:1]] and reasons == ["stop"] and stopped_with == [second]


def test_plan_batches_buckets_by_length_and_respects_limits(tiny_lm):
    reqs = [G.SampleRequest(key=i, input_ids=tuple(range(1, 2 + (i * 7) % 23)), temperature=1, top_p=1, seed=i,
                            max_new_tokens=8) for i in range(20)]
    batches = G.plan_batches(reqs, G.GenerationConfig(max_batch_rows=6, max_batch_tokens=10_000))
    assert sum(len(b) for b in batches) == 20 and all(len(b) <= 6 for b in batches)
    lengths = [len(r.input_ids) for b in batches for r in b]
    assert lengths == sorted(lengths)
    tight = G.plan_batches(reqs, G.GenerationConfig(max_batch_rows=64, max_batch_tokens=100))
    assert all(len(b) * (max(len(r.input_ids) for r in b) + 8) <= 100 or len(b) == 1 for b in tight)


def test_on_step_can_abort(tiny_lm):
    with pytest.raises(G.GenerationAborted):
        G.generate(tiny_lm.model, tiny_lm.tokenizer, [_req(tiny_lm, "Hi", key=0, max_new_tokens=30)],
                   on_step=lambda n: True)


def test_request_and_config_validate():
    with pytest.raises(ValueError):
        G.SampleRequest(key=0, input_ids=(), temperature=1, top_p=1, seed=0, max_new_tokens=1)
    with pytest.raises(ValueError):
        G.SampleRequest(key=0, input_ids=(1,), temperature=1, top_p=0, seed=0, max_new_tokens=1)
    with pytest.raises(ValueError):
        G.GenerationConfig(max_batch_rows=0)
    assert G.GenerationConfig.for_device(torch.device("cuda")).max_batch_rows > G.GenerationConfig().max_batch_rows
    assert G.derive_seed(1, 2, 3) == G.derive_seed(1, 2, 3) != G.derive_seed(1, 2, 4)
