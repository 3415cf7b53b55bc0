"""One step's groups: rollout -> reward -> advantage, with dynamic sampling's refills.

`collect_groups(trainer)` draws the step's prompts, samples G completions for each (rollout.py),
scores them with the task's rewards (rewards/, tasks/) and turns the rewards into group
advantages (algo/advantages.py). With `grpo.filter_zero_std_groups` a group whose G rewards are all equal
carries no gradient: it is dropped and more prompts are drawn, up to `max_refill_rounds` times.
Every rank draws the same prompts and keeps its own slice of whole groups.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from smolgrpo.algo.advantages import group_advantages, zero_std_keep_mask
from smolgrpo.config.schema import Config
from smolgrpo.generation.rollout import Rollout, eos_token_ids, generate
from smolgrpo.models import distributed as dist_utils
from smolgrpo.rewards.scoring import RewardResult
from smolgrpo.tasks.base import Task
from smolgrpo.tasks.data import Problem
from smolgrpo.tasks.prompts import render_prompt
from smolgrpo.training.batching import select_rows
from smolgrpo.training.guided_groups import add_reference_rows, clamp_reference_advantages


def prompts_for_rank(problems: list[Problem], rank: int, world_size: int) -> list[Problem]:
    per_rank = math.ceil(len(problems) / world_size)
    return problems[rank * per_rank : (rank + 1) * per_rank]


@dataclass
class GroupStats:
    """What sampling and scoring did this step on this rank, summed over the refill rounds.

    The per-row lists describe the policy's sampled rows only (with guided groups, the
    reference rows are left out), `rows_per_group` of them per group drawn."""

    rows_per_group: int
    groups_generated: int = 0
    zero_std_groups: int = 0  # groups whose rewards were all equal, kept or not
    generation_s: float = 0.0
    reward_s: float = 0.0
    generated_tokens: int = 0
    truncated: int = 0
    calculator_tokens: int = 0  # tokens the tools (the calculator...) wrote (not in the loss)
    tool_calls: dict[str, int] = field(default_factory=dict)  # tool name -> calls (tools.py)
    tool_errors: dict[str, int] = field(default_factory=dict)  # tool name -> error answers
    reward_timeouts: int = 0  # answer checks stopped at their time limit (sandbox.py)
    reward_errors: int = 0  # answer checks that raised, exited or crashed
    problems: list[Problem] = field(default_factory=list)  # every group drawn, kept or not
    lengths: list[int] = field(default_factory=list)  # per sampled row
    responses: list[str] = field(default_factory=list)  # per sampled row
    totals: list[float] = field(default_factory=list)  # weighted total reward per sampled row
    rewards: dict[str, list[float]] = field(default_factory=dict)  # reward -> per sampled row
    reward_times: dict[str, float] = field(default_factory=dict)  # seconds per reward

    def add_samples(self, rollout: Rollout, seconds: float) -> None:
        """The policy's samples of one round (taken before any reference row goes in)."""
        self.generation_s += seconds
        self.generated_tokens += int(rollout.completion_mask.sum())
        self.truncated += int(rollout.truncated.sum())
        self.lengths.extend(rollout.completion_lengths.tolist())
        self.responses.extend(rollout.responses)
        if rollout.forced_mask is not None:
            self.calculator_tokens += int(rollout.forced_mask.sum())

    def add_tool_counts(self, counts: dict[str, dict[str, int]]) -> None:
        """One round's calls and errors per tool (`ToolBox.take_counts`)."""
        for name, calls in counts["calls"].items():
            self.tool_calls[name] = self.tool_calls.get(name, 0) + calls
        for name, errors in counts["errors"].items():
            self.tool_errors[name] = self.tool_errors.get(name, 0) + errors

    def add_scores(self, scored: RewardResult, sampled_rows: list[bool], seconds: float) -> None:
        """One round's scores (`task.score`'s result), of the rows where `sampled_rows`."""
        self.reward_s += seconds
        self.reward_timeouts += scored.timeouts
        self.reward_errors += scored.errors
        for name, values in scored.per_reward.items():
            self.rewards.setdefault(name, []).extend(
                v for v, keep in zip(values, sampled_rows) if keep
            )
            self.reward_times[name] = self.reward_times.get(name, 0.0) + scored.seconds[name]
        self.totals.extend(v for v, keep in zip(scored.total, sampled_rows) if keep)


@dataclass
class CollectedGroups:
    """The step's kept groups on this rank, one rollout per refill round that kept any."""

    rollouts: list[Rollout]
    advantages: list[torch.Tensor]  # (rows of the rollout,) each
    problems: list[Problem]  # one per kept group, in row order
    stats: GroupStats


def collect_groups(trainer) -> CollectedGroups:
    """Rollouts, rewards and advantages for this step, refilling zero-signal groups if asked."""
    config, G = trainer.config, trainer.config.sampling.num_generations
    guided = config.grpo.guided_groups  # the G-th row of a group: the reference solution
    stats = GroupStats(rows_per_group=G - 1 if guided else G)  # the sampled rows
    kept = CollectedGroups([], [], [], stats)
    kept_rewards: list[torch.Tensor] = []  # for `scale_rewards: batch`, over the whole step
    rounds = 1 + (config.grpo.max_refill_rounds if config.grpo.filter_zero_std_groups else 0)
    quota = math.ceil(config.optim.prompts_per_step / trainer.world_size)  # groups per rank
    for _ in range(rounds):
        # Every rank must draw the same prompts from the stream to stay in step: draw
        # enough for the rank that lacks the most, then keep this rank's slice.
        deficit = int(dist_utils.all_max(float(quota - len(kept.problems))))
        problems = prompts_for_rank(
            trainer.stream.take(deficit * trainer.world_size), trainer.rank, trainer.world_size
        )
        trainer.phase("generating")
        rollout, is_reference = sample_groups(trainer, problems, stats)
        trainer.phase("scoring")
        rewards, advantages, zero_std = score_groups(
            trainer.task,
            problems,
            rollout.responses,
            is_reference,
            config,
            trainer.step + 1,
            stats,
            rollout.completion_lengths.tolist(),
        )
        keep = ~zero_std if config.grpo.filter_zero_std_groups else torch.ones_like(zero_std)
        if keep.any():
            rows = zero_std_keep_mask(~keep, G).to(rollout.completion_ids.device)  # (n * G,)
            kept.rollouts.append(select_rows(rollout, rows))
            kept.advantages.append(advantages.to(rows.device)[rows])
            kept_rewards.append(rewards[rows.cpu()])
            kept.problems.extend(p for p, k in zip(problems, keep.tolist()) if k)
        if dist_utils.all_max(float(quota - len(kept.problems))) <= 0:
            break
    if config.grpo.scale_rewards == "batch":
        kept.advantages = scaled_by_step_std(kept.advantages, kept_rewards)
    return kept


def sample_groups(
    trainer, problems: list[Problem], stats: GroupStats
) -> tuple[Rollout, torch.Tensor]:
    """(G rows per problem, which of them are reference rows (n * G,) on the CPU).

    The policy samples G completions per problem, or G - 1 and the reference solution with
    `grpo.guided_groups`."""
    config, G = trainer.config, trainer.config.sampling.num_generations
    guided = config.grpo.guided_groups
    started = time.perf_counter()
    with trainer.autocast():
        rollout = generate(
            trainer.model,
            trainer.tokenizer,
            [
                render_prompt(trainer.tokenizer, p.question, trainer.template, trainer.few_shot)
                for p in problems
            ],
            num_generations=G - 1 if guided else G,
            max_new_tokens=config.sampling.max_completion_length,
            temperature=config.sampling.temperature,
            top_p=config.sampling.top_p,
            top_k=config.sampling.top_k,
            prefill=trainer.template.prefill,
            ignore_eos=config.sampling.ignore_eos,
            synced=trainer.sharded,
            should_stop=trainer.stop_pending,
            calculator=trainer.tools,
            cuda_graphs=config.sampling.cuda_graphs,
        )
    # Metrics describe the policy's samples: taken before the reference rows go in.
    stats.add_samples(rollout, time.perf_counter() - started)
    if trainer.tools is not None:
        stats.add_tool_counts(trainer.tools.take_counts())
    if not guided:
        return rollout, torch.zeros(len(problems) * G, dtype=torch.bool)
    eos = eos_token_ids(trainer.model, trainer.tokenizer)[0]
    rollout, is_reference = add_reference_rows(
        rollout, problems, trainer.tokenizer, trainer.template.prefill, eos
    )
    return rollout, is_reference.cpu()


def score_groups(
    task: Task,
    problems: list[Problem],
    responses: list[str],
    is_reference: torch.Tensor,
    config: Config,
    step: int,
    stats: GroupStats,
    completion_tokens: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rewards (n * G,), advantages (n * G,), zero-std groups (n,)) of one round's groups.

    With `scale_rewards: batch` the advantages are only centred here: they are divided by the
    std of the step's kept groups once they are all in (scaled_by_step_std)."""
    G = config.sampling.num_generations
    started = time.perf_counter()
    golds = [p.gold for p in problems for _ in range(G)]
    questions = [p.question for p in problems for _ in range(G)]
    extra = {
        "completion_tokens": completion_tokens,
        "max_completion_length": config.sampling.max_completion_length,
        "overlong_buffer": config.rewards.overlong_buffer,
    }
    scored = task.score(responses, golds, config.rewards.weights, questions, step, extra)
    stats.add_scores(scored, (~is_reference).tolist(), time.perf_counter() - started)
    rewards = torch.tensor(scored.total, dtype=torch.float32)  # (n * G,)
    scale = "none" if config.grpo.scale_rewards == "batch" else config.grpo.scale_rewards
    advantages, zero_std = group_advantages(rewards, G, scale)  # (n * G,), (n,)
    if config.grpo.guided_groups:
        advantages = clamp_reference_advantages(advantages, is_reference)
    stats.groups_generated += len(problems)
    stats.zero_std_groups += int(zero_std.sum())
    stats.problems.extend(problems)
    return rewards, advantages, zero_std


def scaled_by_step_std(
    centred: list[torch.Tensor], rewards: list[torch.Tensor], eps: float = 1e-4
) -> list[torch.Tensor]:
    """`scale_rewards: batch`: each round's centred advantages divided by the std of the
    rewards of every group the step keeps, on all ranks, whatever refill round drew them."""
    values = torch.cat(rewards) if rewards else torch.zeros(0)  # (kept rows,)
    std = dist_utils.global_std(values)
    return [advantages / (std.to(advantages.device) + eps) for advantages in centred]
