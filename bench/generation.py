"""Benchmark: batched candidate sampling (the generation service's engine) against the naive
baseline (one `model.generate` per candidate), in the same run, on the default model.

    .venv/bin/python bench/generation.py [--prompts 8] [--k 4] [--max-new-tokens 64] [--device cpu]

Both sides sample the same prompts with the same temperatures, top-p, token budget and seeds.
Prints tokens/s and candidates/s for each and the ratios. The default model is converted into
the model store first if it is not there yet (once, ~20 s, not timed).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTIONS = [
    "Write a short story about a robot learning to paint.",
    "Explain how photosynthesis works.",
    "Give me five tips for learning a new language.",
    "Describe the water cycle in detail.",
    "What are the benefits of regular exercise? Explain.",
    "Write a poem about the sea.",
    "Explain the difference between a list and a tuple in Python.",
    "How does a bicycle stay upright?",
    "Summarise the causes of the French Revolution.",
    "What should I pack for a week of hiking in the mountains?",
    "Explain what a neural network is to a ten-year-old.",
    "Compare electric cars and petrol cars.",
    "How do vaccines train the immune system?",
    "Write a haiku about autumn, then explain it.",
    "Why is the sky blue?",
    "Give a recipe for a simple tomato soup.",
]
TEMPERATURES = (0.7, 1.0)
TOP_P = 0.95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--k", type=int, default=4, help="candidates per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default=os.environ.get("STUDIO_DEVICE", ""), help="cpu, cuda, … (default: auto)")
    parser.add_argument("--batch-rows", type=int, default=0, help="override GenerationConfig.max_batch_rows")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (see below)")
    parser.add_argument("--model", default="", help="a HF model directory (default: the converted default model)")
    args = parser.parse_args()

    import django

    django.setup()
    import torch
    from django.conf import settings

    from training.ml import sampling as G
    from modelhub.default_model import default_model_convert
    from modelhub.loading import load_causal_lm

    path = Path(args.model) if args.model else default_model_convert(Path(settings.MODEL_DIR))
    lm = load_causal_lm(path, device=args.device or None)
    model, tok = lm.model, lm.tokenizer
    config = G.GenerationConfig.for_device(lm.device, **({"max_batch_rows": args.batch_rows} if args.batch_rows else {}))
    questions = (QUESTIONS * (args.prompts // len(QUESTIONS) + 1))[:args.prompts]
    requests = []
    for p, question in enumerate(questions):
        ids = tuple(G.encode_chat(tok, G.build_chat([{"role": "user", "content": question}])))
        for k in range(args.k):
            requests.append(G.SampleRequest(key=(p, k), input_ids=ids, temperature=TEMPERATURES[k % 2], top_p=TOP_P,
                                            seed=G.derive_seed("bench", p, k), max_new_tokens=args.max_new_tokens))

    def sync():
        if lm.device.type == "cuda":
            torch.cuda.synchronize()

    print(f"model {path.name} on {lm.device} ({str(lm.dtype).removeprefix('torch.')}), loaded in {lm.seconds:.2f} s; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    if lm.device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(lm.device)}")
    print(f"workload: {args.prompts} prompts x {args.k} candidates x {args.max_new_tokens} new tokens "
          f"(temperatures {TEMPERATURES}, top-p {TOP_P}); batch rows {config.max_batch_rows}")

    # Warm up both paths (allocator, kernels) outside the timings.
    G.generate(model, tok, requests[:2], config=config)
    warm = torch.tensor([requests[0].input_ids], device=lm.device)
    model.generate(input_ids=warm, attention_mask=torch.ones_like(warm), max_new_tokens=4, do_sample=False,
                   pad_token_id=tok.pad_token_id)

    # Rounds interleave the two sides (the batched workload once, then a slice of the naive
    # candidates), so a neighbour's load on a shared machine hits both alike. Wall time and
    # this process's CPU time are both reported.
    batched_wall = batched_cpu = naive_wall = naive_cpu = 0.0
    batched_tokens = naive_tokens = 0
    batches: list = []
    slices = [requests[i::args.rounds] for i in range(args.rounds)]
    for naive_slice in slices:
        sync()
        w0, c0 = time.perf_counter(), time.process_time()
        round_batches = []
        results = G.generate(model, tok, requests, config=config, on_batch=lambda r, s: round_batches.append(s))
        sync()
        batched_wall += time.perf_counter() - w0
        batched_cpu += time.process_time() - c0
        batched_tokens += sum(r.tokens for r in results)
        batches = round_batches
        w0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            for req in naive_slice:
                torch.manual_seed(req.seed)
                ids = torch.tensor([req.input_ids], device=lm.device)
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                     temperature=req.temperature, top_p=req.top_p, top_k=0,
                                     max_new_tokens=req.max_new_tokens, pad_token_id=tok.pad_token_id)
                naive_tokens += int(out.shape[1] - ids.shape[1])
        sync()
        naive_wall += time.perf_counter() - w0
        naive_cpu += time.process_time() - c0
    # Per workload: the batched side ran it `rounds` times, the naive side once in slices.
    batched_s, batched_cpu_s = batched_wall / args.rounds, batched_cpu / args.rounds
    batched_tokens //= args.rounds
    naive_s, naive_cpu_s = naive_wall, naive_cpu

    n = len(requests)
    b_tps, n_tps = batched_tokens / batched_s, naive_tokens / naive_s
    b_cps, n_cps = n / batched_s, n / naive_s
    padded = sum(s.padded_prompt_tokens for s in batches)
    real = sum(s.prompt_tokens for s in batches)
    print(f"batched: {len(batches)} batch(es), prompt padding {100 * (padded - real) / max(padded, 1):.1f}%")
    print(f"{'':8} {'seconds':>9} {'cpu s':>8} {'tokens':>8} {'tokens/s':>10} {'candidates/s':>13}")
    print(f"{'batched':8} {batched_s:9.2f} {batched_cpu_s:8.1f} {batched_tokens:8d} {b_tps:10.1f} {b_cps:13.3f}")
    print(f"{'naive':8} {naive_s:9.2f} {naive_cpu_s:8.1f} {naive_tokens:8d} {n_tps:10.1f} {n_cps:13.3f}")
    print(f"ratio batched/naive: {b_tps / n_tps:.1f}x tokens/s, {b_cps / n_cps:.1f}x candidates/s "
          f"(per CPU second: {(batched_tokens / batched_cpu_s) / (naive_tokens / naive_cpu_s):.1f}x tokens)")
    print("sample:", repr(results[0].text[:160]))


if __name__ == "__main__":
    main()
