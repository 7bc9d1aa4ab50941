"""Soft prompts (prompt tuning, Lester et al. 2021, through peft's `PromptTuningConfig`): N
trained vectors in front of every sequence, the model's own weights frozen. The adapter is a
few thousand numbers (N x hidden size) and a model can hold one per task.

peft applies a soft prompt inside its own `forward` and `generate`. Our training and sampling
paths call the transformer under the peft wrapper directly (a prompt encoded once with its K
answers on its KV cache, batched decoding that drops finished rows), so they put the soft
prompt in the token stream instead: its N positions are written as the virtual token ids
-1 .. -N in front of the prompt (`with_soft_prompt`), and `input_embeddings` turns a row of ids
into embeddings, the virtual ids into the soft prompt's vectors. Everything built on token
lists then works unchanged: padding, attention masks, positions counted from the mask, shared
prefixes, KV caches. A test holds our log-probabilities and greedy samples equal to peft's own
forward and generate.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch


def _peft(model):
    return getattr(model, "module", model)  # DistributedDataParallel


def base_transformer(model):
    """The transformers model under the DistributedDataParallel and peft wrappers."""
    peft = _peft(model)
    return peft.get_base_model() if hasattr(peft, "get_base_model") else peft


def is_soft_prompt(model) -> bool:
    """Whether `model` is a peft model whose active adapter is a soft prompt."""
    config = getattr(_peft(model), "active_peft_config", None)
    return bool(config is not None and getattr(config, "is_prompt_learning", False))


def soft_prompt_length(model) -> int:
    """The soft prompt's virtual tokens (0 for a model without one)."""
    return int(_peft(model).active_peft_config.num_virtual_tokens) if is_soft_prompt(model) else 0


def virtual_ids(length: int) -> tuple[int, ...]:
    """The ids the soft prompt's positions are written with: -1 .. -length."""
    return tuple(range(-1, -length - 1, -1))


def with_soft_prompt(model, rows: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """`rows` (token lists) with the model's soft prompt in front of each; unchanged without one."""
    n = soft_prompt_length(model)
    if not n:
        return [tuple(r) for r in rows]
    prefix = virtual_ids(n)
    return [prefix + tuple(r) for r in rows]


def input_embeddings(model, ids: torch.Tensor) -> torch.Tensor:
    """(…, H) embeddings of `ids` (…): the model's word embeddings, and for the virtual ids the
    soft prompt's vectors (with their gradient when it trains)."""
    words = base_transformer(model).get_input_embeddings()
    n = soft_prompt_length(model)
    if not n:
        return words(ids)
    virtual = ids < 0
    embeddings = words(ids.clamp(min=0))
    if not virtual.any():
        return embeddings  # decoding steps after the prompt
    prompt = _peft(model).get_prompt(batch_size=1)[0].to(embeddings.dtype)  # (N, H)
    slot = (-ids - 1).clamp(min=0, max=n - 1)  # (…) which virtual token
    return torch.where(virtual.unsqueeze(-1), prompt[slot], embeddings)


def add_soft_prompt(model, *, tokens: int, init_text: str, tokenizer, task: str, seed: int):
    """Wrap `model` with a trainable soft prompt of `tokens` vectors (peft prompt tuning); a reward
    model's head trains whole beside it. Initialised from the embeddings of `init_text`'s tokens,
    repeated to length (what peft's TEXT init does; done here from the tokenizer in hand, where
    peft would load one from a path), or drawn at random when `init_text` is empty."""
    from peft import PromptTuningConfig, get_peft_model

    torch.manual_seed(seed)
    config = PromptTuningConfig(task_type="SEQ_CLS" if task == "reward" else "CAUSAL_LM", num_virtual_tokens=tokens,
                                prompt_tuning_init="RANDOM")
    words = model.get_input_embeddings()
    model = get_peft_model(model, config)
    if init_text:
        ids = tokenizer(init_text, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
        ids = (ids * (tokens // len(ids) + 1))[:tokens]
        with torch.no_grad():
            model.prompt_encoder[model.active_adapter].embedding.weight.copy_(words(torch.tensor(ids)))
    return model


def trainable_again(model):
    """A loaded soft prompt made trainable. peft refuses `is_trainable=True` when it loads a
    prompt-learning adapter (its config was saved in inference mode), so that is undone here:
    the prompt's vectors take gradients again, the model under them stays frozen."""
    model.active_peft_config.inference_mode = False
    for param in model.prompt_encoder.parameters():
        param.requires_grad_(True)
    return model


# --- Which runs can start from an adapter ---------------------------------------------------

def adapter_type(path) -> str:
    """"soft_prompt" or "lora" for a peft adapter's folder (its adapter_config.json), "" for
    anything else (a full model)."""
    try:
        peft_type = json.loads((Path(path) / "adapter_config.json").read_text()).get("peft_type")
    except (OSError, ValueError, AttributeError):
        return ""
    return "soft_prompt" if peft_type == "PROMPT_TUNING" else "lora" if peft_type else ""


def adapter_start_problem(*, kind: str, lora: bool, soft_prompt: bool, start: str) -> str | None:
    """Why a `kind` run with these settings cannot start from a model of adapter type `start`
    ("" a full model, "lora", "soft_prompt"), in words that follow the model's name; None when
    it can. A LoRA adapter is merged into its base when a run trains anything else; a soft
    prompt has no weights to merge into, so only a soft-prompt run can go on from one."""
    if start == "soft_prompt":
        if kind == "reward":
            return ("is a soft prompt, which cannot be merged into weights: train the reward model from its base "
                    "model.")
        if not soft_prompt:
            return ("is a soft prompt, which cannot be merged into weights: train it further with soft_prompt on, "
                    "or start from its base model.")
    elif start == "lora":
        if soft_prompt:
            return ("is a LoRA adapter: a soft prompt goes on a full model. Start from its base model, or train "
                    "with lora instead.")
        if kind == "reward" and lora:
            return ("is a LoRA adapter: train its reward model with lora off (the adapter is merged first), or from "
                    "a full model.")
    return None
