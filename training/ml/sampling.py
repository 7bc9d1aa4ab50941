"""Batched sampling from a causal LM, the one sampler every path that generates shares (the
model hub's generation jobs, a policy's win-rate evaluation): pure torch/transformers
functions, no Django.

The pipeline, each step a small function a test can call:

1. `build_chat` turns a prompt (messages, reference documents) and a prompt template
   ("plain", "step_by_step", ...) into chat messages;
2. `encode_chat` applies the tokenizer's chat template;
3. `generate` packs many (prompt, sample) rows into left-padded batches, sorted by prompt length
   so rows of one batch need little padding, and runs `sample_batch` on each;
4. `sample_batch` is a custom decode loop over the model's KV cache: one forward per step for the
   whole batch, rows that finished (EOS or their token budget) are dropped from the batch and from
   the cache at once, and every row samples from its own `torch.Generator` seeded with its own
   seed, so a row's text depends on its seed and parameters, not on which rows it shared a batch
   with (same seed + same parameters + same model -> same text).

Sampling is temperature + nucleus (top-p) by inverse-CDF with one uniform per row and step drawn
from the row's generator; temperature 0 is greedy.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch

from training.ml import prompting
from training.ml.soft_prompt import base_transformer, input_embeddings, is_soft_prompt, with_soft_prompt

# The prompt templates live with the one prompt renderer (training.ml.prompting).
PROMPT_TEMPLATES = prompting.PROMPT_TEMPLATES


class GenerationAborted(Exception):
    """`on_step` asked to stop (e.g. the job was cancelled); nothing of the batch is returned."""


@dataclass
class GenerationConfig:
    """How `generate` packs rows into batches. The defaults suit a laptop CPU; `for_device`
    raises them on a GPU."""

    max_batch_rows: int = 32  # rows (prompt x sample) decoded together in one forward pass
    max_batch_tokens: int = 16384  # cap on rows x (prompt + new tokens): bounds KV-cache memory
    max_prompt_tokens: int = 2048  # longer prompts keep their end (the question), dropping the start
    trim_padding_every: int = 16  # steps between dropping cache columns that only finished rows needed

    def __post_init__(self):
        if self.max_batch_rows < 1:
            raise ValueError("max_batch_rows must be at least 1.")
        if self.max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be at least 1.")
        if self.max_prompt_tokens < 1:
            raise ValueError("max_prompt_tokens must be at least 1.")

    @classmethod
    def for_device(cls, device: torch.device, **overrides) -> "GenerationConfig":
        if torch.device(device).type == "cuda":
            base = dict(max_batch_rows=128, max_batch_tokens=262144, max_prompt_tokens=4096)
        else:
            base = {}
        base.update(overrides)
        return cls(**base)


@dataclass(frozen=True)
class SampleRequest:
    """One candidate to sample: a tokenised prompt and the parameters that reproduce it."""

    key: Hashable  # the caller's id for this row, returned on its result
    input_ids: tuple[int, ...]  # the prompt after the chat template
    temperature: float  # 0 = greedy
    top_p: float  # nucleus mass in (0, 1]
    seed: int  # seeds this row's own generator
    max_new_tokens: int

    def __post_init__(self):
        if not self.input_ids:
            raise ValueError("A sample request needs at least one prompt token.")
        if not 0 <= self.temperature <= 2:
            raise ValueError("temperature must be in [0, 2].")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1].")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1.")


@dataclass
class SampleResult:
    key: Hashable
    token_ids: list[int]  # generated tokens, without the stop token
    text: str
    finish_reason: str  # "stop" (EOS) or "length" (max_new_tokens reached)
    seconds: float  # wall time of the batch this row was decoded in, shared by its rows
    prompt_tokens: int = 0
    batch_rows: int = 0  # how many rows shared its batch
    stop_token_id: int | None = None  # the stop token the row ended with (finish_reason "stop")

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class BatchStats:
    rows: int
    prompt_tokens: int  # real (unpadded) prompt tokens
    padded_prompt_tokens: int  # rows x longest prompt
    new_tokens: int
    steps: int
    seconds: float
    extra: dict = field(default_factory=dict)


# --- Prompt building -------------------------------------------------------------------------

def build_chat(messages: Sequence[dict], documents: Sequence[dict] = (), template: str = "plain") -> list[dict]:
    """Chat messages for one candidate (training.ml.prompting.render_chat: the renderer training
    and the exports use too)."""
    return prompting.render_chat(messages, documents, template)


def encode_chat(tokenizer, chat: Sequence[dict], *, max_prompt_tokens: int = 2048) -> list[int]:
    """Token ids of `chat` with the generation prompt (training.ml.prompting.encode_prompt).
    Too-long prompts keep their last `max_prompt_tokens` tokens: the question is at the end."""
    return prompting.encode_prompt(tokenizer, chat)[-max_prompt_tokens:]


def stop_token_ids(tokenizer, model=None) -> set[int]:
    """Every token that ends an answer: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if source is None:
            continue
        ids.update(source if isinstance(source, (list, tuple)) else [source])
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        token_id = tokenizer.convert_tokens_to_ids(token) if token in tokenizer.get_vocab() else None
        if token_id is not None:
            ids.add(token_id)
    return ids


# --- Sampling --------------------------------------------------------------------------------

def sample_next_tokens(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
                       uniforms: torch.Tensor, *, probe: int = 256) -> torch.Tensor:
    """Next token per row by temperature + nucleus sampling with a given uniform per row.

    logits (B, V); temperature, top_p, uniforms (B,). Returns (B,) long.

    Inverse-CDF sampling: the token is the first whose cumulative probability exceeds
    u x (mass kept). With top_p < 1 the kept set is the nucleus, the smallest set of most likely
    tokens whose mass reaches top_p (Holtzman et al. 2020). Sorting the whole vocabulary every
    step costs more than the model's forward on a CPU, so the nucleus is looked for in the
    `probe` most likely tokens first (a top-k, exact whenever their mass reaches top_p, which
    is almost always); only rows whose nucleus is wider are sorted in full. With top_p = 1 the
    CDF runs over the vocabulary in id order (no sort needed). Rows with temperature 0 take the
    argmax. Every branch depends only on the row itself, so a row samples the same token
    whatever other rows share its batch.
    """
    logits = logits.float()
    rows, vocab = logits.shape
    scaled = logits / temperature.clamp(min=1e-4).unsqueeze(1)  # (B, V)
    probs = torch.softmax(scaled, dim=-1)  # (B, V)
    top_probs, top_idx = probs.topk(min(probe, vocab), dim=-1)  # (B, k), sorted descending
    tokens = top_idx[:, 0].clone()  # greedy rows keep this
    sampling = temperature > 0
    nucleus = sampling & (top_p < 1) & (top_probs.sum(dim=-1) >= top_p)
    if nucleus.any():
        idx = nucleus.nonzero().squeeze(1)
        tokens[idx] = _inverse_cdf(top_probs[idx], top_idx[idx], top_p[idx], uniforms[idx])
    full = sampling & (top_p >= 1)
    if full.any():
        idx = full.nonzero().squeeze(1)
        cdf = probs[idx].cumsum(dim=-1)  # (b, V) in id order
        target = (uniforms[idx] * cdf[:, -1]).unsqueeze(1)
        tokens[idx] = torch.searchsorted(cdf, target, right=True).clamp(max=vocab - 1).squeeze(1)
    wide = sampling & (top_p < 1) & ~nucleus
    if wide.any():
        idx = wide.nonzero().squeeze(1)
        sorted_probs, sorted_idx = probs[idx].sort(dim=-1, descending=True)
        tokens[idx] = _inverse_cdf(sorted_probs, sorted_idx, top_p[idx], uniforms[idx])
    return tokens


def _inverse_cdf(sorted_probs: torch.Tensor, sorted_idx: torch.Tensor, top_p: torch.Tensor,
                 uniforms: torch.Tensor) -> torch.Tensor:
    """Sample from the nucleus of probabilities sorted descending: (b, k) -> (b,) token ids."""
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    kept = sorted_probs.masked_fill(mass_before >= top_p.unsqueeze(1), 0.0)  # the first token is always kept
    cdf = kept.cumsum(dim=-1)  # (b, k)
    target = (uniforms * cdf[:, -1]).unsqueeze(1)  # (b, 1)
    pick = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[1] - 1)  # (b, 1)
    return sorted_idx.gather(1, pick).squeeze(1)


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def _cache_select(cache, keep: torch.Tensor) -> None:
    """Keep only the rows `keep` (1-D long) of every layer's cached keys/values."""
    cache.batch_select_indices(keep)


def _cache_trim_left(cache, columns: int) -> None:
    """Drop the first `columns` positions of every layer (padding no remaining row attends to).
    RoPE is already applied to cached keys, so positions stay right."""
    for layer in getattr(cache, "layers", []):
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys = layer.keys[:, :, columns:, :]
            layer.values = layer.values[:, :, columns:, :]


@torch.inference_mode()
def sample_batch(model, requests: Sequence[SampleRequest], *, pad_id: int, stop_ids: set[int],
                 config: GenerationConfig | None = None,
                 on_step: Callable[[int], bool | None] | None = None
                 ) -> tuple[list[list[int]], list[str], list[int | None], BatchStats]:
    """Decode one batch of rows with a KV cache; returns (tokens per row, finish reasons, the stop
    token each row ended with or None, stats).

    Rows are left-padded so that every row's next token sits in the last column. Each step runs
    one forward for the rows still active; a row that hits a stop token or its token budget is
    removed from the batch and its cache rows dropped, so finished rows cost nothing.
    `on_step(tokens_this_step)` is called after every step; returning True aborts the batch
    (raises GenerationAborted). A model with a soft prompt (a peft prompt-tuning adapter) decodes
    with it in front of every row (training.ml.soft_prompt).
    """
    from transformers import DynamicCache

    config = config or GenerationConfig()
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    n = len(requests)
    soft = is_soft_prompt(model)
    lm = base_transformer(model) if soft else model  # the transformer under peft's wrapper

    def forward(ids, **kwargs):
        if soft:
            return lm(inputs_embeds=input_embeddings(model, ids), **kwargs)
        return lm(input_ids=ids, **kwargs)

    input_ids, mask = _left_pad(with_soft_prompt(model, [r.input_ids for r in requests]), pad_id, device)  # (B, T)
    position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, T): real tokens count from 0
    temperature = torch.tensor([r.temperature for r in requests], dtype=torch.float32, device=device)
    top_p = torch.tensor([r.top_p for r in requests], dtype=torch.float32, device=device)
    budget = torch.tensor([r.max_new_tokens for r in requests], dtype=torch.long)
    generators = [torch.Generator().manual_seed(int(r.seed)) for r in requests]
    stop = torch.tensor(sorted(stop_ids) or [-1], dtype=torch.long, device=device)

    outputs: list[list[int]] = [[] for _ in range(n)]
    reasons = ["length"] * n
    stopped_with: list[int | None] = [None] * n
    active = torch.arange(n)  # (A,) indices into requests of the rows still decoding
    cache = DynamicCache()
    out = forward(input_ids, attention_mask=mask, position_ids=position_ids, past_key_values=cache, use_cache=True,
                  logits_to_keep=1)
    next_pos = position_ids[:, -1] + 1  # (A,)
    steps = 0
    while True:
        logits = out.logits[:, -1, :]  # (A, V)
        uniforms = torch.tensor([torch.rand((), generator=generators[i]).item() for i in active.tolist()],
                                dtype=torch.float32, device=device)
        tokens = sample_next_tokens(logits, temperature, top_p, uniforms)  # (A,)
        steps += 1
        is_stop = torch.isin(tokens, stop).cpu()
        tokens_cpu = tokens.cpu()
        finished = []
        for j, i in enumerate(active.tolist()):
            if is_stop[j]:
                reasons[i] = "stop"
                stopped_with[i] = int(tokens_cpu[j])
                finished.append(j)
                continue
            outputs[i].append(int(tokens_cpu[j]))
            if len(outputs[i]) >= budget[i]:
                finished.append(j)
        if on_step is not None and on_step(len(active) - int(is_stop.sum())):
            raise GenerationAborted()
        if finished:
            keep_mask = torch.ones(len(active), dtype=torch.bool)
            keep_mask[finished] = False
            if not keep_mask.any():
                break
            keep = keep_mask.nonzero().squeeze(1)
            keep_dev = keep.to(device)
            active = active[keep]
            _cache_select(cache, keep_dev)
            mask = mask[keep_dev]
            tokens = tokens[keep_dev]
            temperature, top_p, next_pos = temperature[keep_dev], top_p[keep_dev], next_pos[keep_dev]
        if config.trim_padding_every and steps % config.trim_padding_every == 0:
            leading = int((mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())  # all-padding columns
            if leading:
                _cache_trim_left(cache, leading)
                mask = mask[:, leading:]
        mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=device)], dim=1)
        out = forward(tokens.unsqueeze(1), attention_mask=mask, position_ids=next_pos.unsqueeze(1),
                      past_key_values=cache, use_cache=True)
        next_pos = next_pos + 1
    stats = BatchStats(
        rows=n,
        prompt_tokens=sum(len(r.input_ids) for r in requests),
        padded_prompt_tokens=n * max(len(r.input_ids) for r in requests),
        new_tokens=sum(len(o) for o in outputs),
        steps=steps,
        seconds=time.perf_counter() - t0,
    )
    return outputs, reasons, stopped_with, stats


def plan_batches(requests: Sequence[SampleRequest], config: GenerationConfig) -> list[list[SampleRequest]]:
    """Length bucketing: sort rows by prompt length and cut batches of at most max_batch_rows
    rows and max_batch_tokens (rows x (longest prompt + largest budget)) tokens."""
    ordered = sorted(requests, key=lambda r: (len(r.input_ids), r.max_new_tokens))
    batches: list[list[SampleRequest]] = []
    current: list[SampleRequest] = []
    for req in ordered:
        candidate = current + [req]
        width = max(len(r.input_ids) for r in candidate) + max(r.max_new_tokens for r in candidate)
        if current and (len(candidate) > config.max_batch_rows or len(candidate) * width > config.max_batch_tokens):
            batches.append(current)
            current = [req]
        else:
            current = candidate
    if current:
        batches.append(current)
    return batches


def generate(model, tokenizer, requests: Sequence[SampleRequest], *, config: GenerationConfig | None = None,
             on_batch: Callable[[list[SampleResult], BatchStats], None] | None = None,
             on_step: Callable[[int], bool | None] | None = None) -> list[SampleResult]:
    """Sample every request, batched; results come back in the order of `requests`.

    `on_batch(results, stats)` is called after each batch (progress reporting), `on_step` after
    every decoding step (heartbeat, cancellation: see `sample_batch`)."""
    config = config or GenerationConfig()
    if not requests:
        return []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        pad_id = 0
    stops = stop_token_ids(tokenizer, model)
    by_key: dict[Hashable, SampleResult] = {}
    for batch in plan_batches(requests, config):
        tokens, reasons, stopped_with, stats = sample_batch(model, batch, pad_id=pad_id, stop_ids=stops,
                                                            config=config, on_step=on_step)
        results = [
            SampleResult(key=req.key, token_ids=toks, text=_clean(tokenizer.decode(toks, skip_special_tokens=True)),
                         finish_reason=reason, seconds=stats.seconds, prompt_tokens=len(req.input_ids),
                         batch_rows=len(batch), stop_token_id=stop)
            for req, toks, reason, stop in zip(batch, tokens, reasons, stopped_with)
        ]
        for res in results:
            by_key[res.key] = res
        if on_batch is not None:
            on_batch(results, stats)
    return [by_key[r.key] for r in requests]


def _clean(text: str) -> str:
    """Decoded text as every consumer can store it: without NUL characters (a model can emit
    their token; PostgreSQL text and jsonb cannot hold them), and without surrounding space."""
    return text.replace("\x00", "").strip()


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (job seed, prompt id, slot): same parts, same seed."""
    import hashlib

    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
