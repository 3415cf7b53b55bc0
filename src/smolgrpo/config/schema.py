"""Training configuration: one dataclass per concern, loaded from YAML, validated on load.

A recipe is a YAML file with the sections below; any key may be overridden on the command line
with `--set section.key=value` (the value is parsed as YAML, so `--set optim.learning_rate=1e-5`
gives a float). An unknown key, a wrong type or an out-of-range value is a one-line
`SmolGRPOError` naming it. The resolved config is saved as `config.yaml` in every run directory.

Defaults follow current practice for small models:
- `loss_type: dapo`: token-level normalisation (DAPO), so long completions are not down-weighted
  per token as in the original per-sequence GRPO mean.
- `beta: 0.0`: no KL penalty and no reference model (DAPO, Dr. GRPO and TRL's default); it saves a
  model copy and a forward pass per step, and short runs on a verifiable reward don't drift far.
- `scale_rewards: group`: divide by the group's std as in DeepSeekMath (`none` gives Dr. GRPO).
- `epsilon: 0.2`, `epsilon_high: 0.28`: DAPO's clip-higher, which keeps low-probability tokens
  explorable and delays entropy collapse.
- `num_iterations: 1` (mu): one optimisation pass per generation batch; the ratio is then 1 and
  the loss is plain advantage-weighted REINFORCE with the GRPO normalisation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from smolgrpo.algo.advantages import VALID_SCALE_REWARDS
from smolgrpo.algo.loss import VALID_IMPORTANCE_SAMPLING_LEVELS, VALID_LOSS_TYPES
from smolgrpo.config.parse import check_value as _check
from smolgrpo.config.parse import one_of as _one_of
from smolgrpo.config.tools import check_tool_specs
from smolgrpo.errors import SmolGRPOError
from smolgrpo.rewards.builtin import DEFAULT_REWARD_WEIGHTS, REWARDS
from smolgrpo.rewards.plugins import is_plugin, load_reward
from smolgrpo.runs.tracking import check_report_to
from smolgrpo.tasks import TASK_KINDS, task_kind
from smolgrpo.tasks.prompts import DEFAULT_PREFILL, SYSTEM_PROMPT, PromptTemplate


@dataclass
class ModelConfig:
    name: str = "HuggingFaceTB/SmolLM2-135M-Instruct"  # hub id, folder, .gguf or "embedded"
    device: str = "auto"
    # Mixed precision: weights and optimizer state stay float32; "auto" autocasts to bf16 on GPU.
    dtype: str = "auto"
    trust_remote_code: bool = False
    allow_pickle: bool = False
    gradient_checkpointing: bool = False
    # Shard parameters, gradients and optimizer state over the ranks with FSDP2 (for models that
    # do not fit one device); only under torchrun with WORLD_SIZE > 1, ignored otherwise.
    fsdp: bool = False
    lora: bool = False  # full fine-tuning by default: a 135M model fits easily
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    # Or "auto": every linear layer but the output head, for any architecture (architectures.py).
    lora_target_modules: list | str = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )

    def validate(self) -> None:
        dtypes = ("auto", "float32", "bfloat16", "float16")
        _check(self.dtype in dtypes, "model.dtype", self.dtype, _one_of(dtypes))
        _check(self.lora_rank >= 1, "model.lora_rank", self.lora_rank, ">= 1")
        _check(self.lora_alpha > 0, "model.lora_alpha", self.lora_alpha, "> 0")
        _check(0 <= self.lora_dropout < 1, "model.lora_dropout", self.lora_dropout, "in [0, 1)")
        _check(
            self.lora_target_modules == "auto" or isinstance(self.lora_target_modules, list),
            "model.lora_target_modules",
            self.lora_target_modules,
            "a list of module names or auto",
        )


@dataclass
class DataConfig:
    task: str = "gsm8k"  # gsm8k, jsonl, csv or reasoning_gym (see tasks/)
    source: str | None = None  # folder of {train,test}.jsonl (.csv), a file, or a hub id
    train_split: str = "train"
    train_limit: int | None = None
    max_solution_steps: int | None = None  # train only on problems this short (a curriculum)
    eval_split: str = "test"
    question_field: str = "question"  # jsonl/csv: the columns holding question and answer
    answer_field: str = "answer"
    solution_field: str | None = None  # jsonl/csv/hub: worked steps, for examples and sft
    hub_config: str | None = None  # hub: the dataset's configuration name, if it has several
    answer_type: str = "number"  # jsonl/csv: number, exact or math
    gym_dataset: str = "countdown"  # reasoning_gym: dataset name, problems per split, seed
    gym_size: int = 1000
    gym_seed: int = 0
    gym_config: dict = field(default_factory=dict)  # the dataset's own options, e.g. min_numbers
    gym_check_timeout_s: float = 1.0  # per answer, for the sandboxed checks (sandbox.py)

    def validate(self) -> None:
        steps = self.max_solution_steps
        _check(steps is None or steps >= 1, "data.max_solution_steps", steps, ">= 1")
        timeout = self.gym_check_timeout_s
        _check(0 < timeout <= 600, "data.gym_check_timeout_s", timeout, "> 0 and <= 600")
        task_kind(self.task).check(self)


@dataclass
class PromptConfig:
    system_prompt: str = SYSTEM_PROMPT
    prefill: str = DEFAULT_PREFILL  # the cold-start fix, see prompts.py
    num_few_shot: int = 0

    def validate(self) -> None:
        _check(self.num_few_shot >= 0, "prompt.num_few_shot", self.num_few_shot, ">= 0")

    def template(self) -> PromptTemplate:
        return PromptTemplate(self.system_prompt, self.prefill, self.num_few_shot)


@dataclass
class RewardConfig:
    weights: dict = field(default_factory=lambda: dict(DEFAULT_REWARD_WEIGHTS))
    # DAPO's soft overlong penalty (the `overlong_penalty` reward, in [-1, 0]): the last
    # `overlong_buffer` tokens before sampling.max_completion_length cost up to 1. 0: off.
    overlong_buffer: int = 0

    def validate(self) -> None:
        _check(self.overlong_buffer >= 0, "rewards.overlong_buffer", self.overlong_buffer, ">= 0")
        for name, weight in self.weights.items():
            if is_plugin(name):
                load_reward(name)  # importable and callable, or one line naming it
            elif name not in REWARDS:
                raise SmolGRPOError(
                    f"rewards.weights: unknown reward '{name}' (valid: {', '.join(REWARDS)}"
                    ", or module:function / file.py:function)"
                )
            _check(
                isinstance(weight, int | float) and not isinstance(weight, bool),
                f"rewards.weights.{name}",
                weight,
                "a number",
            )
        _check(
            any(w != 0 for w in self.weights.values()),
            "rewards.weights",
            self.weights,
            "a mapping with at least one non-zero weight",
        )


_FULL = "as the loss's log-probs are of the full distribution"


@dataclass
class SamplingConfig:
    num_generations: int = 8  # G, completions per prompt
    max_completion_length: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    # Benchmarks only: always generate max_completion_length tokens (EOS is masked out), so a
    # speed comparison does not hinge on how long the sampled answers happened to be.
    ignore_eos: bool = False
    # The GSM8K paper's calculator (calculator.py): after "expression =", the exact result is
    # written for the model. Off by default; its inserted tokens get no loss. Same as adding
    # `calculator` to `tools`.
    calculator: bool = False
    # Tools the model may call, `name(arguments) =` (docs/tools.md): `calculator` and your own
    # `file.py:function`; each result is written for the model, out of the loss.
    tools: list = field(default_factory=list)
    tool_timeout_s: float = 5.0  # per call of your own tool; then its result is an error text
    tool_max_output_chars: int = 200  # a longer result is cut to this many characters
    # On a CUDA device, decode on a static KV cache with each token step replayed as a CUDA
    # graph (graph_decode.py); false: the eager loop. SMOLGRPO_CUDA_GRAPHS=0 also turns it off.
    cuda_graphs: bool = True

    def tool_specs(self) -> list[str]:
        """The tools on: `tools`, with the calculator first when `calculator` is set."""
        alias = ["calculator"] if self.calculator and "calculator" not in self.tools else []
        return alias + list(self.tools)

    def validate(self) -> None:
        _check(self.num_generations >= 2, "sampling.num_generations", self.num_generations, ">= 2")
        _check(
            self.max_completion_length >= 1,
            "sampling.max_completion_length",
            self.max_completion_length,
            ">= 1",
        )
        _check(self.temperature > 0, "sampling.temperature", self.temperature, "> 0")
        _check(0 < self.top_p <= 1, "sampling.top_p", self.top_p, "in (0, 1]")
        _check(self.top_k >= 0, "sampling.top_k", self.top_k, ">= 0")
        check_tool_specs(self.tools)
        _check(0 < self.tool_timeout_s <= 600, "sampling.tool_timeout_s", self.tool_timeout_s,
               "> 0 and <= 600")  # fmt: skip
        _check(self.tool_max_output_chars >= 1, "sampling.tool_max_output_chars",
               self.tool_max_output_chars, ">= 1")  # fmt: skip
        # The loss's log-probs are of the full softmax: a truncated sampler would draw from
        # another distribution than the one trained on (eval --top-p may truncate).
        _check(self.top_p == 1, "sampling.top_p", self.top_p, f"1.0 in training, {_FULL}")
        _check(self.top_k == 0, "sampling.top_k", self.top_k, f"0 in training, {_FULL}")


@dataclass
class GRPOConfig:
    loss_type: str = "dapo"
    beta: float = 0.0
    scale_rewards: str = "group"
    epsilon: float = 0.2
    epsilon_high: float | None = 0.28
    # GSPO: "sequence" uses each completion's length-normalised ratio for all its tokens,
    # clipped to 1 +- sequence_epsilon (algo/loss.py); "token": the per-token ratio.
    importance_sampling_level: str = "token"
    sequence_epsilon: float = 3e-4  # GSPO's clip range of the sequence ratio, both sides
    # Truncated importance sampling against the sampler (algo/loss.py): each token's loss is
    # weighted by min(exp(old - sampler log-prob), cap), detached; 0 or null: off (the default:
    # on CPU the two agree to rounding; TRL's cap is 3.0). The ratio is logged as sampler/*.
    sampler_ratio_cap: float | None = None
    num_iterations: int = 1
    mask_truncated_completions: bool = False
    filter_zero_std_groups: bool = False  # dynamic sampling (DAPO): refill with informative groups
    max_refill_rounds: int = 3
    guided_groups: bool = False  # the last row of each group is the reference (guided_groups.py)

    def validate(self) -> None:
        _check(
            self.loss_type in VALID_LOSS_TYPES,
            "grpo.loss_type",
            self.loss_type,
            _one_of(VALID_LOSS_TYPES),
        )
        _check(
            self.scale_rewards in VALID_SCALE_REWARDS,
            "grpo.scale_rewards",
            self.scale_rewards,
            _one_of(VALID_SCALE_REWARDS),
        )
        _check(self.beta >= 0, "grpo.beta", self.beta, ">= 0")
        _check(self.epsilon > 0, "grpo.epsilon", self.epsilon, "> 0")
        _check(
            self.epsilon_high is None or self.epsilon_high > 0,
            "grpo.epsilon_high",
            self.epsilon_high,
            "> 0, or null for no upper clip of its own",
        )
        _check(
            self.importance_sampling_level in VALID_IMPORTANCE_SAMPLING_LEVELS,
            "grpo.importance_sampling_level",
            self.importance_sampling_level,
            _one_of(VALID_IMPORTANCE_SAMPLING_LEVELS),
        )
        _check(self.sequence_epsilon > 0, "grpo.sequence_epsilon", self.sequence_epsilon, "> 0")
        _check(
            self.sampler_ratio_cap is None or self.sampler_ratio_cap >= 0,
            "grpo.sampler_ratio_cap",
            self.sampler_ratio_cap,
            "> 0, or 0/null for off",
        )
        _check(self.num_iterations >= 1, "grpo.num_iterations", self.num_iterations, ">= 1")
        _check(
            self.max_refill_rounds >= 0, "grpo.max_refill_rounds", self.max_refill_rounds, ">= 0"
        )


@dataclass
class OptimConfig:
    learning_rate: float = 5e-6
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    warmup_steps: int = 10
    lr_schedule: str = "cosine"  # or "constant"
    # What the cosine's progress counts: "steps" (of max_steps), or "time": the share of
    # run.time_limit_s used (or of max_steps, whichever is further), so a run that its time
    # limit ends still ends its decay, on a fast machine or a slow one.
    schedule_length: str = "steps"
    max_grad_norm: float = 1.0
    max_steps: int = 200
    prompts_per_step: int = 8  # prompts per optimizer step (all ranks together)
    micro_batch_size: int = 16  # sequences per forward/backward; gradients accumulate
    # Steps whose loss or gradients are NaN/inf are skipped; this many in a row stop the run.
    max_bad_steps: int = 3

    def validate(self) -> None:
        _check(self.learning_rate > 0, "optim.learning_rate", self.learning_rate, "> 0")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, ">= 0")
        for name in ("adam_beta1", "adam_beta2"):
            _check(0 <= getattr(self, name) < 1, f"optim.{name}", getattr(self, name), "in [0, 1)")
        _check(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, ">= 0")
        schedules = ("cosine", "constant")
        _check(
            self.lr_schedule in schedules, "optim.lr_schedule", self.lr_schedule, _one_of(schedules)
        )
        lengths = ("steps", "time")
        _check(
            self.schedule_length in lengths,
            "optim.schedule_length",
            self.schedule_length,
            _one_of(lengths),
        )
        _check(self.max_grad_norm > 0, "optim.max_grad_norm", self.max_grad_norm, "> 0")
        _check(self.max_steps >= 1, "optim.max_steps", self.max_steps, ">= 1")
        _check(self.prompts_per_step >= 1, "optim.prompts_per_step", self.prompts_per_step, ">= 1")
        _check(self.micro_batch_size >= 1, "optim.micro_batch_size", self.micro_batch_size, ">= 1")
        _check(self.max_bad_steps >= 1, "optim.max_bad_steps", self.max_bad_steps, ">= 1")


@dataclass
class RunConfig:
    output_dir: str = "runs/smolgrpo"
    seed: int = 0
    save_every: int = 50  # steps between checkpoints (also written on Ctrl-C and at the end)
    keep_checkpoints: int = 2
    eval_every: int = 0  # 0 = no periodic evaluation
    eval_limit: int = 100
    eval_batch_size: int = 32
    log_samples_every: int = 10
    log_num_prompts: int = 2  # prompts whose G completions go to samples/step_N.jsonl
    # Seconds from SIGTERM/SIGINT/SIGUSR1 to exit (checkpoint included); past it the run exits
    # without a new checkpoint. Below a scheduler's kill delay (SLURM's KillWait is 30 s).
    stop_grace_s: float = 20.0
    # Wall-clock budget of the run's training in seconds (0: none), counted across --resume.
    # The run stops after the step that would leave too little time for another one (the last
    # step's time is the estimate) and saves final/ as at max_steps. It cuts a step-counted
    # decaying lr schedule short: pair it with lr_schedule: constant, or with
    # optim.schedule_length: time, which decays over the time limit instead.
    time_limit_s: float = 0.0
    # Experiment trackers that mirror metrics.jsonl: tensorboard, trackio, wandb (tracking.py).
    report_to: list = field(default_factory=list)

    def validate(self) -> None:
        check_report_to(self.report_to)
        _check(self.save_every >= 1, "run.save_every", self.save_every, ">= 1")
        _check(self.keep_checkpoints >= 1, "run.keep_checkpoints", self.keep_checkpoints, ">= 1")
        _check(
            self.eval_every >= 0, "run.eval_every", self.eval_every, ">= 0 (0: no periodic eval)"
        )
        _check(self.log_samples_every >= 1, "run.log_samples_every", self.log_samples_every, ">= 1")
        _check(self.log_num_prompts >= 0, "run.log_num_prompts", self.log_num_prompts, ">= 0")
        _check(self.eval_batch_size >= 1, "run.eval_batch_size", self.eval_batch_size, ">= 1")
        _check(self.eval_limit >= 1, "run.eval_limit", self.eval_limit, ">= 1")
        # `x >= 0` is False for NaN too, so NaN is refused.
        _check(self.time_limit_s >= 0, "run.time_limit_s", self.time_limit_s, ">= 0 (0: no limit)")
        _check(self.stop_grace_s > 0, "run.stop_grace_s", self.stop_grace_s, "> 0")


@dataclass
class SFTConfig:
    """`smolgrpo sft` only (the supervised warm start, see sft.py); `train` ignores it."""

    max_length: int = 512  # prompt + response tokens; longer examples are cut

    def validate(self) -> None:
        _check(self.max_length >= 2, "sft.max_length", self.max_length, ">= 2")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)

    def validate(self, weights_given: bool = False) -> Config:
        """`weights_given`: the recipe (or --set) wrote rewards.weights; otherwise the task's
        own default weights replace GSM8K's."""
        # An unknown data.task keeps these weights: data.validate reports it, in its turn.
        keeps_defaults = not weights_given and self.rewards.weights == DEFAULT_REWARD_WEIGHTS
        if keeps_defaults and self.data.task in TASK_KINDS:
            self.rewards.weights = task_kind(self.data.task).default_reward_weights(self.data)
        for section in dataclasses.fields(self):
            validate = getattr(getattr(self, section.name), "validate", None)
            if validate:
                validate()
        if self.model.fsdp and self.grpo.filter_zero_std_groups:
            raise SmolGRPOError(
                "config: model.fsdp cannot be combined with grpo.filter_zero_std_groups "
                "(every rank must train on the same number of rows)"
            )
        worked_solutions = task_kind(self.data.task).has_worked_solutions(self.data)
        if self.grpo.guided_groups and not worked_solutions:
            raise SmolGRPOError(
                "config: grpo.guided_groups needs worked solutions: data.task gsm8k, or "
                f"jsonl/csv/hub with data.solution_field (not '{self.data.task}')"
            )
        if self.model.fsdp and self.model.lora:
            raise SmolGRPOError("config: model.fsdp cannot be combined with model.lora (yet)")
        buffer, limit = self.rewards.overlong_buffer, self.sampling.max_completion_length
        _check(buffer <= limit, "rewards.overlong_buffer", buffer, f"<= {limit} (max length)")
        if self.rewards.weights.get("overlong_penalty") and not buffer:
            raise SmolGRPOError(
                "config: rewards.weights.overlong_penalty needs overlong_buffer > 0"
            )
        if self.optim.schedule_length == "time" and not self.run.time_limit_s:
            raise SmolGRPOError(
                "config: optim.schedule_length 'time' needs run.time_limit_s > 0 (the time to "
                "decay over)"
            )
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))
