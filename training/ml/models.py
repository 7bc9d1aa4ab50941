"""Models for training: loading a base for SFT or as a reward model (optionally with a LoRA
adapter), scoring answers with a reward model, and saving what was trained.

A reward model is the base LM with a scalar head (`AutoModelForSequenceClassification`,
num_labels=1, the layout TRL and OpenRLHF read) whose score is read at the last token of prompt
+ answer (the answer's end-of-turn token). Two ways to score a prompt's K answers, equal up to
float rounding (a test holds them equal):

    score_sequences         each answer with its own copy of the prompt: K forwards of P + R tokens
    score_shared_prefix     the prompt once, its K answers on top of its KV cache: P + K*R tokens

A LoRA adapter is merged into its base wherever a run does not train it further; a soft prompt
(training.ml.soft_prompt) cannot be merged into weights and stays a peft model, which every
forward pass here reads through `input_embeddings`.

Pure torch + transformers (+ peft for LoRA and soft prompts); no Django.
"""
from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import torch

from training.ml.soft_prompt import (adapter_type, base_transformer, input_embeddings, is_soft_prompt,
                                     soft_prompt_length, trainable_again, virtual_ids, with_soft_prompt)

# Beside a trained reward model: {"offset": …}, subtracted from its raw scores (normalisation).
# The model hub (modelhub.loading) reads it.
REWARD_HEAD_FILE = "reward_head.json"


# --- Devices and precision --------------------------------------------------------------------

def resolve_precision(precision: str, device: torch.device) -> str:
    """"bf16" or "fp32" for a config's "auto" | "bf16" | "fp32" on `device`.

    "auto" is bf16 on a GPU that supports it and fp32 on a CPU. Measured on the 2-core
    development CPU (Xeon with AVX-512 BF16), a reward-model step of the default model took
    15 s in fp32 against 24 s with bf16 autocast and 23 s with bf16 weights: the bf16 matmuls
    alone are no faster there (160 against 160-250 GFLOPS) and the casts and bf16 backward
    cost more. "bf16" stays available for CPUs where it pays.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """Mixed precision for forward passes: bf16 matmuls, fp32 weights, optimizer and losses."""
    if precision != "bf16":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# --- Loading ----------------------------------------------------------------------------------

def _from_pretrained(cls, path: Path, **kwargs):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if path.is_file() and path.suffix == ".gguf":
        return cls.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True, **kwargs)
    return cls.from_pretrained(path, local_files_only=True, **kwargs)


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def reward_pad_token(tokenizer) -> None:
    """A reward model reads its score at the last token, the answer's end-of-turn token. Where
    the tokenizer pads with that same token (SmolLM2 pads with <|im_end|>), transformers' own
    sequence-classification pooling, which looks for the last non-pad token, would read the
    token before it: pad with another special token so that any tool reading the saved model
    scores the same token we do."""
    from training.ml.prompting import end_of_turn_id

    end = end_of_turn_id(tokenizer)
    if tokenizer.pad_token_id not in (None, end, tokenizer.eos_token_id):
        return
    vocab = tokenizer.get_vocab()
    for token in (tokenizer.unk_token, "<|endoftext|>", "<pad>", "<unk>"):
        if token and token in vocab and vocab[token] not in (end, tokenizer.eos_token_id):
            tokenizer.pad_token = token
            return


def merged_adapter(model):
    """A peft model with its LoRA adapter merged into plain weights; a soft prompt, which has no
    weights to merge into, stays a (frozen) peft model."""
    if is_soft_prompt(model):
        for param in model.parameters():
            param.requires_grad_(False)
        return model
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def load_causal_lm_for_training(path: Path, *, adapter_of: Path | None = None, keep_adapter: bool = False):
    """A causal LM in fp32 for training. `adapter_of`: `path` is a peft adapter on that base;
    with `keep_adapter` the adapter stays unmerged and trainable (trained further), otherwise it
    is merged so every weight can train."""
    from transformers import AutoModelForCausalLM

    if adapter_of is not None:
        from peft import PeftModel

        base = _from_pretrained(AutoModelForCausalLM, Path(adapter_of), dtype=torch.float32)
        soft = adapter_type(path) == "soft_prompt"
        model = PeftModel.from_pretrained(base, str(path), is_trainable=keep_adapter and not soft,
                                          local_files_only=True)
        if keep_adapter:
            return trainable_again(model) if soft else model
        return merged_adapter(model)
    return _from_pretrained(AutoModelForCausalLM, Path(path), dtype=torch.float32)


def load_reward_model_for_training(path: Path, *, tokenizer, adapter_of: Path | None = None, seed: int = 0):
    """The base as a reward model in fp32: the LM's weights with a new scalar head (drawn from
    `seed`), or a reward model's own head when `path` is one."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)  # the new head's initial weights
    if adapter_of is not None:
        # A LoRA-tuned LM: merge its adapter into the base, then add the head.
        lm = load_causal_lm_for_training(path, adapter_of=adapter_of)
        config = lm.config
        config.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
        missing = model.load_state_dict(lm.state_dict(), strict=False)
        del lm
        _init_score(model, missing.missing_keys)
    else:
        model = _from_pretrained(AutoModelForSequenceClassification, Path(path), num_labels=1,
                                 dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def load_reward_model_for_scoring(path: Path, *, adapter_of: Path | None = None):
    """A trained reward model and its tokenizer in fp32, eval mode: a sequence-classification
    directory, or a LoRA adapter of one (`adapter_of`: its base's directory), merged."""
    from transformers import AutoModelForSequenceClassification

    path = Path(path)
    tokenizer = load_tokenizer(path)
    if adapter_of is not None:
        from peft import PeftModel

        base = _from_pretrained(AutoModelForSequenceClassification, Path(adapter_of), num_labels=1,
                                dtype=torch.float32)
        model = merged_adapter(PeftModel.from_pretrained(base, str(path), local_files_only=True))
    else:
        model = _from_pretrained(AutoModelForSequenceClassification, path, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def _init_score(model, missing: Sequence[str]) -> None:
    head = reward_head(model)
    if any(name.startswith(("score", "classifier")) for name in missing):
        torch.nn.init.normal_(head.weight, std=model.config.initializer_range)


AUTO_CPU_TRAIN_LAYERS = 12  # see TrainConfig.train_layers


def resolve_train_layers(value, *, device: torch.device, adapter: bool) -> int | None:
    """How many top layers train: a config's int, None (all), or "auto" (all on a GPU, the top
    AUTO_CPU_TRAIN_LAYERS on a CPU; none frozen under an adapter, LoRA or a soft prompt, which
    trains only its own weights)."""
    if value == "auto":
        return None if adapter or device.type != "cpu" else AUTO_CPU_TRAIN_LAYERS
    return value


def freeze_lower_layers(model, train_layers: int | None) -> int:
    """Leave only the top `train_layers` transformer layers, the final norm and the head
    trainable; returns how many layers train. Frozen layers keep no activations for a backward
    pass (nothing below them needs a gradient), which is where the time goes on a CPU."""
    if not train_layers:
        return -1
    base = base_transformer(model)
    backbone = getattr(base, base.base_model_prefix)
    layers = getattr(backbone, "layers", None)
    if layers is None:
        raise ValueError(f"{type(base).__name__} has no `layers` to freeze; set train_layers to null.")
    keep = min(train_layers, len(layers))
    if keep == len(layers):
        return keep  # every layer trains: the embeddings too
    for param in backbone.parameters():
        param.requires_grad_(False)
    for layer in list(layers)[len(layers) - keep:]:
        for param in layer.parameters():
            param.requires_grad_(True)
    norm = getattr(backbone, "norm", None)
    if norm is not None:
        for param in norm.parameters():
            param.requires_grad_(True)
    return keep


def add_lora(model, *, r: int, alpha: int, dropout: float, target_modules, task: str):
    """Wrap `model` with a trainable LoRA adapter (peft); a reward model's head trains whole."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        task_type="SEQ_CLS" if task == "reward" else "CAUSAL_LM",
                        modules_to_save=["score"] if task == "reward" else None)
    return get_peft_model(model, config)


# --- Reward scores ----------------------------------------------------------------------------

def reward_head(model) -> torch.nn.Module:
    base = base_transformer(model)
    for name in ("score", "classifier"):
        if hasattr(base, name):
            return getattr(base, name)
    raise ValueError(f"{type(base).__name__} has no scalar head (score/classifier): not a reward model.")


def _backbone(model) -> torch.nn.Module:
    base = base_transformer(model)
    return getattr(base, base.base_model_prefix)


def _pad_right(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids.to(device), mask.to(device)


def _pad_left(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def score_sequences(model, sequences: Sequence[Sequence[int]], *, pad_id: int) -> torch.Tensor:
    """Scores (N,) of whole sequences (prompt + answer), read at each one's last token."""
    device = next(model.parameters()).device
    ids, mask = _pad_right(with_soft_prompt(model, sequences), pad_id, device)  # (N, T)
    hidden = _backbone(model)(inputs_embeds=input_embeddings(model, ids), attention_mask=mask).last_hidden_state
    last = mask.sum(dim=1) - 1  # (N,)
    pooled = hidden[torch.arange(len(sequences), device=device), last]  # (N, H)
    return reward_head(model)(pooled).squeeze(-1).float()  # (N,)


def encode_shared_prefix(model, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[Sequence[int]]], *,
                         pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The hidden states of every answer of several prompts, each prompt encoded once.

    prompts: B token lists; responses: for each prompt its answers' token lists (answers in
    order: prompt 0's, then prompt 1's, ...). Returns (prompt_last (N, H): the hidden state of
    each answer's prompt at its last token; answer_hidden (N, R, H); answer_ids (N, R);
    answer_mask (N, R)).

    The prompts run left-padded, so each ends in the last column; their KV cache is repeated
    once per answer and the right-padded answers attend to it with positions that continue
    each prompt's own. Gradients flow through the cache into the prompt's encoding, so this
    trains exactly what encoding each answer with its own copy of the prompt trains. A soft
    prompt goes in front of each prompt.
    """
    from transformers import DynamicCache

    backbone = _backbone(model)
    device = next(backbone.parameters()).device
    prompt_ids, prompt_mask = _pad_left(with_soft_prompt(model, prompts), pad_id, device)  # (B, P)
    prompt_pos = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)
    cache = DynamicCache()
    prompt_hidden = backbone(inputs_embeds=input_embeddings(model, prompt_ids), attention_mask=prompt_mask,
                             position_ids=prompt_pos, past_key_values=cache,
                             use_cache=True).last_hidden_state  # (B, P, H)
    owner = torch.tensor([b for b, answers in enumerate(responses) for _ in answers], dtype=torch.long,
                         device=device)  # (N,) the prompt of each answer
    cache.batch_select_indices(owner)  # (N, heads, P, d) per layer
    answers = [a for group in responses for a in group]
    answer_ids, answer_mask = _pad_right(answers, pad_id, device)  # (N, R)
    mask = torch.cat([prompt_mask[owner], answer_mask], dim=1)  # (N, P + R)
    start = prompt_mask.sum(dim=1)[owner]  # (N,) each prompt's real length
    positions = start.unsqueeze(1) + torch.arange(answer_ids.shape[1], device=device).unsqueeze(0)  # (N, R)
    hidden = backbone(inputs_embeds=input_embeddings(model, answer_ids), attention_mask=mask, position_ids=positions,
                      past_key_values=cache, use_cache=True).last_hidden_state  # (N, R, H)
    return prompt_hidden[owner, -1], hidden, answer_ids, answer_mask


def score_shared_prefix(model, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[Sequence[int]]], *,
                        pad_id: int) -> torch.Tensor:
    """Scores (N,) of every answer of several prompts (in order), each prompt encoded once
    (encode_shared_prefix)."""
    _, hidden, _, answer_mask = encode_shared_prefix(model, prompts, responses, pad_id=pad_id)
    last = answer_mask.sum(dim=1) - 1  # (N,)
    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (N, H)
    return reward_head(model)(pooled).squeeze(-1).float()  # (N,)


def score_groups(model, prompts, responses, *, pad_id: int, shared_prefix: bool) -> torch.Tensor:
    """Scores (N,) of the answers of several prompts, by either method."""
    if shared_prefix:
        return score_shared_prefix(model, prompts, responses, pad_id=pad_id)
    return score_sequences(model, [tuple(p) + tuple(a) for p, group in zip(prompts, responses) for a in group],
                           pad_id=pad_id)


def causal_lm_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, V) next-token logits of right-padded rows under a causal LM; a soft prompt goes in
    front and its own positions' logits are left out, so position t still predicts token t + 1."""
    n = soft_prompt_length(model)
    if not n:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits
    rows = input_ids.shape[0]
    prefix = torch.tensor(virtual_ids(n), dtype=input_ids.dtype, device=input_ids.device).expand(rows, n)
    ids = torch.cat([prefix, input_ids], dim=1)
    mask = torch.cat([torch.ones_like(prefix), attention_mask], dim=1)
    return base_transformer(model)(inputs_embeds=input_embeddings(model, ids), attention_mask=mask).logits[:, n:]


# --- Answer log-probabilities (DPO, PPO) ---------------------------------------------------

def _answer_token_logprobs(lm_head, before: torch.Tensor, answer_ids: torch.Tensor, answer_mask: torch.Tensor, *,
                           with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, R) log p(answer token t | everything before it), 0 on padding, and with `with_entropy`
    the entropy of each of those next-token distributions. `before` (N, R, H) holds the hidden
    state that predicts each answer token (the one at the token before it). The vocabulary
    projection runs on answer positions only: the prompt's logits are never needed, and at 49k
    words they would be most of the memory."""
    logits = lm_head(before).float()  # (N, R, V)
    token_logprobs = -torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), answer_ids.reshape(-1), reduction="none").view(answer_ids.shape)
    entropy = None
    if with_entropy:
        log_p = torch.log_softmax(logits, dim=-1)
        entropy = -(log_p.exp() * log_p).sum(dim=-1) * answer_mask
    return token_logprobs * answer_mask, entropy


def answer_token_outputs(model, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[Sequence[int]]], *,
                         pad_id: int, shared_prefix: bool = True,
                         with_entropy: bool = False) -> dict[str, torch.Tensor | None]:
    """Per answer token of every answer of several prompts (answers in order), under a causal LM:
    {"logprobs" (N, R), "mask" (N, R), "hidden" (N, R, H): the hidden state each token was
    predicted from (PPO's value head reads it), "entropy" (N, R) or None}.

    shared_prefix: each prompt encoded once with its answers on its KV cache
    (encode_shared_prefix); else each answer with its own copy of the prompt. The two agree up
    to float rounding (a test holds them equal)."""
    base = base_transformer(model)
    backbone, lm_head = _backbone(model), base.get_output_embeddings()
    device = next(model.parameters()).device
    if shared_prefix:
        prompt_last, hidden, answer_ids, answer_mask = encode_shared_prefix(model, prompts, responses, pad_id=pad_id)
        before = torch.cat([prompt_last.unsqueeze(1), hidden[:, :-1]], dim=1)  # (N, R, H)
    else:
        pairs = [(p, tuple(a)) for p, group in zip(with_soft_prompt(model, prompts), responses) for a in group]
        ids, mask = _pad_right([p + a for p, a in pairs], pad_id, device)  # (N, T)
        hidden = backbone(inputs_embeds=input_embeddings(model, ids), attention_mask=mask).last_hidden_state
        answer_ids, answer_mask = _pad_right([a for _, a in pairs], pad_id, device)  # (N, R)
        starts = torch.tensor([len(p) for p, _ in pairs], device=device)  # (N,)
        # Answer token t sits at position start + t and is predicted by the state at start + t - 1.
        index = (starts.unsqueeze(1) - 1 + torch.arange(answer_ids.shape[1], device=device)).clamp(
            max=hidden.shape[1] - 1)  # (N, R)
        before = hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # (N, R, H)
    token_logprobs, entropy = _answer_token_logprobs(lm_head, before, answer_ids, answer_mask,
                                                     with_entropy=with_entropy)
    return {"logprobs": token_logprobs, "mask": answer_mask.to(token_logprobs.dtype), "hidden": before,
            "entropy": entropy}


def answer_logprobs(model, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[Sequence[int]]], *,
                    pad_id: int, shared_prefix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(answer | prompt) of every answer of several prompts under a causal LM, summed over
    the answer's tokens, and each answer's token count: ((N,), (N,)), answers in order
    (answer_token_outputs)."""
    out = answer_token_outputs(model, prompts, responses, pad_id=pad_id, shared_prefix=shared_prefix)
    return out["logprobs"].sum(dim=1), out["mask"].sum(dim=1).long()


# --- Saving -----------------------------------------------------------------------------------

def save_trained(model, tokenizer, out_dir: Path, *, reward_offset: float | None = None) -> Path:
    """Write the trained model (or its LoRA adapter) and tokenizer to `out_dir` as safetensors.
    A reward model also gets REWARD_HEAD_FILE: where its score is read and the offset that
    centres it (subtracted by every scorer)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if reward_offset is not None:
        (out_dir / REWARD_HEAD_FILE).write_text(json.dumps({
            "pooling": "last_token", "offset": reward_offset,
            "note": "score = head(hidden state of the last token, the answer's end-of-turn token) - offset",
        }, indent=2))
    return out_dir
