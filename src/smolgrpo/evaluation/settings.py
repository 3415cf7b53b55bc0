"""What an eval measures and how it samples: `EvalSettings`, checked when it is made.

The checks name the settings (`temperature must be >= 0`), not the flags that may have set them:
`smolgrpo eval` words its own flag errors (cli/eval.py), training's periodic eval fills these
from a config that was checked already.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from smolgrpo.errors import SmolGRPOError
from smolgrpo.rewards.builtin import DEFAULT_REWARD_WEIGHTS
from smolgrpo.tasks.data import Problem
from smolgrpo.tasks.prompts import PromptTemplate


@dataclass
class EvalSettings:
    """`num_samples` completions per problem, `batch_size` problems at a time.

    `answer_check`: a task's `(answer, gold) -> score` (tasks/); None is GSM8K's numeric match.
    `reward_weights`: the rewards each record logs (empty or None: the default weights).
    `calculator` (a calculator.Calculator, a tools.ToolBox, or None): write the result after
    each "expression =" (calculator.py) or tool call (tools.py); each record then counts its
    `calculator_calls` (the calculator alone) or `tool_calls`.
    `synced`: generation in step with the other ranks (FSDP; see `rollout.generate`).
    """

    num_samples: int = 1
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 16
    template: PromptTemplate | None = None  # None: the default prompt
    few_shot: list[Problem] | None = None
    reward_weights: dict[str, float] | None = None
    answer_check: Callable[[str | None, str], float] | None = None
    calculator: object | None = None
    synced: bool = False
    overlong_buffer: int = 0  # the overlong_penalty reward's buffer (rewards.overlong_buffer)

    def __post_init__(self) -> None:
        self.template = self.template or PromptTemplate()
        self.reward_weights = self.reward_weights or DEFAULT_REWARD_WEIGHTS
        # SmolGRPOError, not ValueError: these are a user's choices (flags, a recipe), worth
        # one `error:` line, not a traceback.
        for name in ("batch_size", "max_new_tokens", "num_samples"):
            value = getattr(self, name)
            if value < 1:
                raise SmolGRPOError(f"{name} must be at least 1, got {value}")
        if self.num_samples > 1 and self.temperature <= 0:
            raise SmolGRPOError("pass@k with num_samples > 1 needs temperature > 0")
        if self.temperature < 0:
            raise SmolGRPOError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise SmolGRPOError(f"top_p must be in (0, 1], got {self.top_p}")
