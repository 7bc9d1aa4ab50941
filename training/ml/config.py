"""Config dataclasses of the training kinds: one per kind, every field commented, validated in
`__post_init__`. The defaults suit the default model (SmolLM2-135M) on a 2-core CPU: pressing
Train with them must give a good model in the time docs/training.md states.

`config_from_dict(kind, data)` builds one from a JSON object (the API's "config"), refusing
unknown keys and wrong types with a message that names the field.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass

PRECISIONS = ("auto", "bf16", "fp32")
SCHEDULES = ("cosine", "linear", "constant")


class ConfigError(ValueError):
    """A config field is wrong: `field` names it, the message says what is allowed."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def _check(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise ConfigError(field_name, message)


@dataclass
class TrainConfig:
    """What every kind of run accepts."""

    # Seeds the data order, new weights (the reward head, LoRA) and sampling: the same seed and
    # data give the same run, killed and resumed or not.
    seed: int = 0
    # Passes over the training split.
    epochs: int = 1
    # Stop after this many optimizer steps (None: run every epoch). The learning-rate schedule
    # spans the steps the run will take, so a short run still ends its warm-up and decay.
    max_steps: int | None = None
    # AdamW's peak learning rate, reached after warm-up.
    learning_rate: float = 2e-5
    # AdamW's decoupled weight decay (not applied to biases and norms).
    weight_decay: float = 0.0
    # Share of the run's steps spent warming the learning rate up linearly from 0.
    warmup_ratio: float = 0.05
    # Decay after warm-up: "cosine" (to 0), "linear" (to 0) or "constant".
    lr_schedule: str = "cosine"
    # Gradients are clipped to this global norm (0 turns clipping off).
    max_grad_norm: float = 1.0
    # "bf16" runs matmuls in bfloat16 (autocast; weights and optimizer stay fp32). "auto" is bf16
    # on a GPU that supports it and fp32 on a CPU, where bf16 training steps measured slower
    # (training.ml.models.resolve_precision).
    precision: str = "auto"
    # Save a resumable checkpoint every this many steps (and at the end of every epoch).
    checkpoint_every: int = 50
    # How many checkpoints to keep (the newest); older ones are deleted.
    keep_checkpoints: int = 2
    # Evaluate on the validation split every this many steps (0: at the end of each epoch only).
    eval_every: int = 0
    # Train only the top this many transformer layers (and the final norm and head); every
    # layer below stays frozen, so the backward pass stops there. None trains every layer.
    # "auto": every layer on a GPU; the top 12 on a CPU, where the backward pass is most of a
    # step: measured on the 2-core CPU with the default model, a reward-model step took 0.62x
    # the time of training every layer, and validation accuracy on FineGrainedRLHF did not
    # change beyond its noise (0.525 [0.468, 0.580] against 0.536 [0.478, 0.588], 539 pairs).
    train_layers: int | str | None = "auto"
    # Train a LoRA adapter (peft) instead of every weight: far less memory, the adapter is
    # registered as a model whose parent is the base.
    lora: bool = False
    # LoRA rank: the adapter's inner width.
    lora_r: int = 16
    # LoRA scale: the adapter's update is multiplied by lora_alpha / lora_r.
    lora_alpha: int = 32
    # Dropout on the adapter's input while training.
    lora_dropout: float = 0.05
    # Which modules get adapters: "all-linear" or a list of module names ("q_proj", ...).
    lora_target_modules: str | list[str] = "all-linear"
    # Train a soft prompt (peft prompt tuning) instead of any weight: `soft_prompt_tokens`
    # vectors in front of every sequence, the model frozen. The smallest adapter there is (16 x
    # 576 numbers for the default model), registered as a model whose parent is the base.
    soft_prompt: bool = False
    # How many virtual tokens the soft prompt has.
    soft_prompt_tokens: int = 16
    # The soft prompt starts as the embeddings of this text's tokens, repeated to length (empty:
    # drawn at random, which Lester et al. found trains worse).
    soft_prompt_init: str = "Answer the user's request helpfully, truthfully and concisely."

    def __post_init__(self):
        _check(isinstance(self.seed, int) and 0 <= self.seed < 2**63, "seed", "an integer from 0 to 2^63-1")
        _check(1 <= self.epochs <= 100, "epochs", "from 1 to 100")
        _check(self.max_steps is None or self.max_steps >= 1, "max_steps", "at least 1 (or null for every epoch)")
        _check(0 < self.learning_rate < 1, "learning_rate", "between 0 and 1")
        _check(0 <= self.weight_decay < 1, "weight_decay", "from 0 to 1")
        _check(0 <= self.warmup_ratio < 1, "warmup_ratio", "from 0 to 1")
        _check(self.lr_schedule in SCHEDULES, "lr_schedule", f"one of {', '.join(SCHEDULES)}")
        _check(self.max_grad_norm >= 0, "max_grad_norm", "0 or more")
        _check(self.precision in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}")
        _check(self.checkpoint_every >= 1, "checkpoint_every", "at least 1")
        _check(self.keep_checkpoints >= 1, "keep_checkpoints", "at least 1")
        _check(self.eval_every >= 0, "eval_every", "0 or more")
        _check(self.train_layers in (None, "auto") or (isinstance(self.train_layers, int) and self.train_layers >= 1),
               "train_layers", 'at least 1, "auto" or null (every layer)')
        _check(not (self.lora and isinstance(self.train_layers, int)), "train_layers",
               "not with lora (the adapter already trains a small part of every layer); set one of them")
        _check(not (self.soft_prompt and self.lora), "soft_prompt", "not with lora; choose one of them")
        _check(not (self.soft_prompt and isinstance(self.train_layers, int)), "train_layers",
               "not with soft_prompt (the model's weights stay frozen); set one of them")
        _check(1 <= self.soft_prompt_tokens <= 512, "soft_prompt_tokens", "from 1 to 512")
        _check(isinstance(self.soft_prompt_init, str) and len(self.soft_prompt_init) <= 2000, "soft_prompt_init",
               "a text of at most 2000 characters")
        _check(1 <= self.lora_r <= 1024, "lora_r", "from 1 to 1024")
        _check(self.lora_alpha >= 1, "lora_alpha", "at least 1")
        _check(0 <= self.lora_dropout < 1, "lora_dropout", "from 0 to 1")
        _check(self.lora_target_modules == "all-linear" or (
            isinstance(self.lora_target_modules, list) and self.lora_target_modules
            and all(isinstance(m, str) and m for m in self.lora_target_modules)),
            "lora_target_modules", '"all-linear" or a non-empty list of module names')

    @property
    def adapter(self) -> bool:
        """Whether the run trains a peft adapter (LoRA or a soft prompt) rather than weights."""
        return self.lora or self.soft_prompt

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning on the snapshot's demonstrations: the causal-LM loss on the
    answer's tokens only (system, user and earlier turns are context, not targets)."""

    learning_rate: float = 5e-5
    # Demonstrations per optimizer step (split into micro-batches by `tokens_per_microbatch`).
    batch_size: int = 8
    # Longest prompt + answer in tokens: the prompt loses its oldest turns first (then its
    # first tokens); the answer is kept whole up to `max_response_tokens`.
    max_length: int = 1024
    # An answer longer than this keeps its first tokens (and then has no end-of-turn target).
    max_response_tokens: int = 512
    # Padded tokens per forward pass: bounds memory (the default model keeps ~1.3 MB of
    # activations per token for the backward pass: 2048 tokens ~ 3 GB). Examples of similar
    # length share a micro-batch (length-grouped batches), so padding stays small.
    tokens_per_microbatch: int = 2048

    def __post_init__(self):
        super().__post_init__()
        _check(1 <= self.batch_size <= 4096, "batch_size", "from 1 to 4096")
        _check(16 <= self.max_length <= 65536, "max_length", "from 16 to 65536")
        _check(1 <= self.max_response_tokens < self.max_length, "max_response_tokens", "from 1 to max_length - 1")
        _check(self.tokens_per_microbatch >= self.max_length, "tokens_per_microbatch", "at least max_length")


LABELS = ("consensus", "annotators")


@dataclass
class PreferenceConfig(TrainConfig):
    """What every kind that learns from rankings shares (reward model, DPO): how a prompt's
    ranked candidates become tokens and pairs, and how many prompts a step takes."""

    # Prompts (each with its K ranked candidates) per optimizer step.
    prompts_per_step: int = 8
    # Longest prompt + answer in tokens. The prompt is cut from the left (oldest turns first,
    # then its first tokens) so that every answer fits whole up to `max_response_tokens`: the
    # tokens where candidates differ are never cut away.
    max_length: int = 512
    # An answer longer than this keeps its first tokens. Pairs whose answers become identical
    # are counted (identical_pairs), never scored as ties.
    max_response_tokens: int = 256
    # Whose rankings become pairs: "consensus" (default), one merged ranking per prompt (ranked
    # pairs over its annotators, weighted by gold trust), or "annotators", every annotator's own
    # ranking. Consensus is the default: contradicting rankings of one prompt give pairs whose
    # gradients cancel (cost without signal), and consensus already down-weights annotators who
    # fail gold items; with one ranking per prompt (imports) both are the same.
    labels: str = "consensus"
    # Encode the prompt once per prompt and its K answers on top of it (one KV cache), instead
    # of the whole prompt once per answer: the same scores, far fewer tokens when prompts are
    # longer than answers.
    share_prompt_prefix: bool = True
    # Padded tokens per forward pass: bounds memory (the default model keeps ~1.3 MB of
    # activations per token for the backward pass: 2048 tokens ~ 3 GB).
    tokens_per_microbatch: int = 2048

    def __post_init__(self):
        super().__post_init__()
        _check(1 <= self.prompts_per_step <= 4096, "prompts_per_step", "from 1 to 4096")
        _check(16 <= self.max_length <= 65536, "max_length", "from 16 to 65536")
        _check(1 <= self.max_response_tokens < self.max_length, "max_response_tokens", "from 1 to max_length - 1")
        _check(self.labels in LABELS, "labels", f"one of {', '.join(LABELS)}")
        _check(self.tokens_per_microbatch >= self.max_length, "tokens_per_microbatch", "at least max_length")


@dataclass
class RewardConfig(PreferenceConfig):
    """The reward model: the base LM with a scalar head on the last token, trained with
    InstructGPT's ranking loss over every K(K-1)/2 pair of each ranking, averaged per prompt."""

    learning_rate: float = 2e-5
    # Add the annotators' rating difference as a margin in the loss (Llama 2's margin loss):
    # -log sigmoid(r_w - r_l - margin * margin_scale). Pairs without ratings get margin 0.
    use_rating_margin: bool = False
    # Multiplies rating differences (1-7 scale) into reward units.
    margin_scale: float = 0.2
    # After training, shift rewards so that the training split's best answers (demonstrations,
    # else the top-ranked candidates) score mean 0: rewards of different models compare, and PPO
    # starts from rewards centred on good answers.
    normalize: bool = True
    # The mean is taken over at most this many of those answers (a sample seeded by `seed`): 512
    # put it within ~4% of a score's standard deviation of the mean over all of them, and
    # scoring all of a 1,500-pair snapshot's answers took minutes on the 2-core CPU.
    normalize_answers: int = 512

    def __post_init__(self):
        super().__post_init__()
        _check(self.normalize_answers >= 1, "normalize_answers", "at least 1")
        _check(0 <= self.margin_scale <= 10, "margin_scale", "from 0 to 10")


DPO_LOSSES = ("sigmoid", "ipo")


@dataclass
class PolicyConfig(TrainConfig):
    """What every kind that trains a policy against preferences shares (DPO, PPO): how the
    trained policy is judged at the end."""

    # With a reward model given to the run: after training, sample one answer per held-out prompt
    # (up to this many validation prompts) from the policy and from the model it started from,
    # and report the reward model's win rate of the policy with its 95% interval and the KL it
    # cost (training.ml.winrate). 0 turns it off. The interval narrows with the prompts: on a
    # 194-prompt held-out split, 64 gave +-0.12 and 194 +-0.07, which is what told the PPO
    # default's 0.58 from chance; judging 194 took 7.2 min of a 20-min run on the 2-core CPU.
    win_rate_prompts: int = 200
    # New tokens per sampled answer in that evaluation.
    win_rate_max_new_tokens: int = 128

    def __post_init__(self):
        super().__post_init__()
        _check(0 <= self.win_rate_prompts <= 100000, "win_rate_prompts", "from 0 to 100000")
        _check(1 <= self.win_rate_max_new_tokens <= 4096, "win_rate_max_new_tokens", "from 1 to 4096")


@dataclass
class DPOConfig(PreferenceConfig, PolicyConfig):
    """Direct preference optimisation: the policy learns every pair of each ranking without a
    reward model, against a frozen reference (the base it starts from) whose log-probabilities
    are computed once before the first step and cached."""

    learning_rate: float = 5e-6
    # How far the policy may move from the reference: the implicit reward is
    # beta * (log pi(y|x) - log pi_ref(y|x)). Smaller lets it move further (DPO paper: 0.1-0.5).
    beta: float = 0.1
    # "sigmoid": DPO's loss (Rafailov et al. 2023); "ipo": IPO's squared loss (Azar et al.
    # 2023), which does not push the margin to infinity on pairs it already gets right. IPO
    # compares log-probabilities averaged per answer token (as TRL does): its squared loss on
    # sums would grow with the answers' length.
    loss: str = "sigmoid"
    # Conservative DPO (sigmoid only): the share of pairs assumed mislabelled; 0 trusts every label.
    label_smoothing: float = 0.0
    # Ranked training prompts learnt from (a sample seeded by `seed` when the snapshot has more;
    # null: all). With 640, a run on ~135-token prompts took 24 min on the 2-core Xeon (the
    # reference pass 7 min, 80 steps of ~9 s 12 min, judged on 64 prompts; 200 add ~4.6 min)
    # and 39 min on a 2-core AMD CPU. Raise it (or null) on a GPU.
    max_prompts: int | None = 640

    def __post_init__(self):
        super().__post_init__()
        _check(0 < self.beta <= 10, "beta", "above 0, at most 10")
        _check(self.loss in DPO_LOSSES, "loss", f"one of {', '.join(DPO_LOSSES)}")
        _check(0 <= self.label_smoothing < 0.5, "label_smoothing", "from 0 to 0.5 (exclusive)")
        _check(self.loss == "sigmoid" or self.label_smoothing == 0, "label_smoothing", "only with the sigmoid loss")
        _check(self.max_prompts is None or self.max_prompts >= 1, "max_prompts", "at least 1 (or null for all)")


@dataclass
class PPOConfig(PolicyConfig):
    """PPO against a reward model (InstructGPT's third step): the policy samples answers to the
    snapshot's training prompts, the reward model scores them, and the clipped PPO objective
    with a per-token KL penalty to the starting model moves the policy towards higher reward.
    One optimizer step is one mini-batch of a rollout; a rollout is trained on `ppo_epochs` times."""

    # At 1e-5 the default run's updates showed clip fraction 0 and approx-KL ~0.001 (the policy
    # hardly moved); at 3e-5, 0.02-0.06 and 0.002-0.017, as healthy PPO runs show.
    learning_rate: float = 3e-5
    # Prompts sampled per rollout (one answer each).
    rollout_prompts: int = 16
    # Prompts per optimizer step: a rollout takes ppo_epochs * rollout_prompts / minibatch_prompts steps.
    minibatch_prompts: int = 8
    # Passes over each rollout (InstructGPT, TRL: 4; fewer keep a CPU run short).
    ppo_epochs: int = 2
    # New tokens per sampled answer. As long as the win rate's answers (win_rate_max_new_tokens):
    # at 64, answers cut short scored lower, and the policy learnt to stop early rather than to
    # answer better (its answers shrank from 51 to ~44 tokens, 56% to ~80% ending on their own).
    max_new_tokens: int = 128
    # Sampling temperature of the rollouts. 1.0 samples the policy itself, which the PPO ratio and
    # the KL estimate assume; other values bias both.
    temperature: float = 1.0
    # A prompt is cut from the left to this many tokens before sampling.
    max_prompt_tokens: int = 384
    # Training prompts answered in an epoch (a sample seeded by `seed` when the snapshot has more;
    # null: all). A rollout of 16 costs one to three minutes on the 2-core CPU, so the default
    # keeps a run of the default config near half an hour.
    max_prompts: int | None = 256
    # The KL penalty's starting weight beta (per token: -beta * (log pi - log pi_ref)).
    kl_coef: float = 0.05
    # Move beta so that the KL per answer tracks kl_target (Ziegler et al. 2019); false keeps it fixed.
    adaptive_kl: bool = True
    # The adaptive controller's target KL per answer, in nats.
    kl_target: float = 6.0
    # The adaptive controller's horizon, in answers (how fast beta moves).
    kl_horizon: int = 10000
    # Safety stop: a rollout whose mean KL to the starting model exceeds this (nats per answer)
    # stops the run with a message, its last checkpoint kept, before the policy drifts further.
    kl_bound: float = 10.0
    # Length-drift alarm: a rollout whose mean answer length is more than this factor longer or
    # shorter than the first rollout's puts a warning in the run's log (reward models often
    # prefer length, and a policy that learns only that is a common PPO failure).
    length_drift_alarm: float = 2.0
    # GAE's discount (1: the score at the answer's end counts fully at every token).
    gamma: float = 1.0
    # GAE's lambda: how far advantages look ahead before trusting the value head.
    lam: float = 0.95
    # PPO's clip range on the probability ratio.
    clip_range: float = 0.2
    # How far the value head's prediction may move per update (clipped value loss).
    value_clip: float = 0.2
    # Weight of the value loss.
    value_coef: float = 0.1
    # Weight of the entropy bonus (0: none).
    entropy_coef: float = 0.0
    # Reward-model scores are clipped to +-this before use (0: no clipping).
    reward_clip: float = 10.0
    # Subtracted from the score of an answer that did not end with end-of-turn (ran out of tokens).
    missing_eos_penalty: float = 0.0
    # Subtract the rollout's mean score from each answer's score before it becomes a reward (a
    # baseline, as RLOO and GRPO use): a reward model's scores are not centred, and the value head
    # starts at 0 and learns at the policy's learning rate, far too slowly to learn their mean. An
    # uncentred mean lands on each answer's last token, and whitening then makes every answer's
    # end look better than its start: with it, a default PPO run on the dialogue set shortened its
    # answers from 70 to 32-51 tokens while its reward fell (docs/training.md). The logged reward
    # stays the uncentred score.
    center_scores: bool = True
    # PPO-ptx (InstructGPT eq. 2): add ptx_coef times the LM loss on the snapshot's
    # demonstrations, so the policy keeps writing like them. 0 turns it off.
    ptx_coef: float = 0.0
    # Demonstrations per step for that loss.
    ptx_examples: int = 4
    # Longest prompt + answer the reward model reads (prompt cut from the left).
    reward_max_length: int = 512
    # Padded tokens per forward pass of the policy and the reference (bounds memory).
    tokens_per_microbatch: int = 2048

    def __post_init__(self):
        super().__post_init__()
        _check(1 <= self.rollout_prompts <= 4096, "rollout_prompts", "from 1 to 4096")
        _check(1 <= self.minibatch_prompts <= self.rollout_prompts, "minibatch_prompts", "from 1 to rollout_prompts")
        _check(1 <= self.ppo_epochs <= 16, "ppo_epochs", "from 1 to 16")
        _check(1 <= self.max_new_tokens <= 4096, "max_new_tokens", "from 1 to 4096")
        _check(0 < self.temperature <= 2, "temperature", "above 0, at most 2")
        _check(16 <= self.max_prompt_tokens <= 65536, "max_prompt_tokens", "from 16 to 65536")
        _check(self.max_prompts is None or self.max_prompts >= 1, "max_prompts", "at least 1 (or null for all)")
        _check(0 <= self.kl_coef <= 10, "kl_coef", "from 0 to 10")
        _check(self.kl_target > 0, "kl_target", "above 0")
        _check(self.kl_horizon >= 1, "kl_horizon", "at least 1")
        _check(self.kl_bound > 0, "kl_bound", "above 0")
        _check(self.length_drift_alarm > 1, "length_drift_alarm", "above 1")
        _check(0 < self.gamma <= 1, "gamma", "above 0, at most 1")
        _check(0 <= self.lam <= 1, "lam", "from 0 to 1")
        _check(0 < self.clip_range < 1, "clip_range", "between 0 and 1")
        _check(self.value_clip > 0, "value_clip", "above 0")
        _check(self.value_coef >= 0, "value_coef", "0 or more")
        _check(self.entropy_coef >= 0, "entropy_coef", "0 or more")
        _check(self.reward_clip >= 0, "reward_clip", "0 or more")
        _check(self.missing_eos_penalty >= 0, "missing_eos_penalty", "0 or more")
        _check(self.ptx_coef >= 0, "ptx_coef", "0 or more")
        _check(1 <= self.ptx_examples <= 256, "ptx_examples", "from 1 to 256")
        _check(32 <= self.reward_max_length <= 65536, "reward_max_length", "from 32 to 65536")
        _check(self.tokens_per_microbatch >= self.max_prompt_tokens + self.max_new_tokens, "tokens_per_microbatch",
               "at least max_prompt_tokens + max_new_tokens")


@dataclass
class BestOfNConfig(SFTConfig, PolicyConfig):
    """Best-of-n (rejection-sampling fine-tuning, as Llama 2's RLHF rounds): the starting model
    answers each training prompt n times, the reward model keeps its best answer, and the model
    is fine-tuned on those (SFT's loss and batches)."""

    learning_rate: float = 2e-5
    # Answers sampled per prompt.
    n: int = 4
    # New tokens per sampled answer.
    max_new_tokens: int = 96
    # Sampling temperature: high enough that the n answers differ.
    temperature: float = 1.0
    # Nucleus (top-p) mass of that sampling.
    top_p: float = 0.95
    # Training prompts answered (a sample seeded by `seed` when there are more; null: all). 256
    # prompts x 4 answers of up to 96 tokens sample in ~9 minutes on the 2-core CPU.
    max_prompts: int | None = 256

    def __post_init__(self):
        super().__post_init__()
        _check(2 <= self.n <= 64, "n", "from 2 to 64")
        _check(1 <= self.max_new_tokens <= min(4096, self.max_response_tokens), "max_new_tokens",
               "from 1 to max_response_tokens")
        _check(0 < self.temperature <= 2, "temperature", "above 0, at most 2")
        _check(0 < self.top_p <= 1, "top_p", "above 0, at most 1")
        _check(self.max_prompts is None or self.max_prompts >= 1, "max_prompts", "at least 1 (or null for all)")


CONFIGS: dict[str, type[TrainConfig]] = {"sft": SFTConfig, "reward": RewardConfig, "dpo": DPOConfig,
                                             "ppo": PPOConfig, "best_of_n": BestOfNConfig}


def _type_ok(value, annotation) -> bool:
    """A JSON value against a field's annotation (int, float, bool, str, X | None, list[str])."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    return True


def config_fields(cls: type[TrainConfig]) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def config_from_dict(kind: str, data: dict | None) -> TrainConfig:
    """The validated config of a `kind` ("sft", "reward", "dpo") from a JSON object; missing fields
    take their defaults. Raises ConfigError naming the first wrong field."""
    if kind not in CONFIGS:
        raise ConfigError("kind", f"unknown kind {kind!r}; one of {', '.join(CONFIGS)}")
    cls = CONFIGS[kind]
    data = dict(data or {})
    if not isinstance(data, dict):
        raise ConfigError("config", "a JSON object")
    hints = typing.get_type_hints(cls)
    known = config_fields(cls)
    for name, value in data.items():
        if name not in known:
            raise ConfigError(name, f"unknown field; {kind} accepts {', '.join(sorted(known))}")
        if not _type_ok(value, hints[name]):
            raise ConfigError(name, f"expected {_type_name(hints[name])}, got {type(value).__name__} {value!r}")
        if hints[name] is float and isinstance(value, int):
            data[name] = float(value)
    return cls(**data)


def _type_name(annotation) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def config_defaults(kind: str) -> dict:
    """Every field of a kind's config with its default (the run form shows them)."""
    return CONFIGS[kind]().as_dict()


def config_help(kind: str) -> dict[str, str]:
    """Each field's comment from the source, for the run form's help text."""
    import inspect

    help_text: dict[str, str] = {}
    for cls in reversed(CONFIGS[kind].__mro__):
        if not (isinstance(cls, type) and issubclass(cls, TrainConfig)):
            continue
        comment: list[str] = []
        for line in inspect.getsource(cls).splitlines():
            stripped = line.strip()
            if stripped.startswith("#"):
                comment.append(stripped.lstrip("# ").strip())
                continue
            name = stripped.split(":", 1)[0].strip()
            if ":" in stripped and name.isidentifier() and comment:
                help_text[name] = " ".join(comment)
            if not stripped.startswith("#"):
                comment = []
    return help_text


