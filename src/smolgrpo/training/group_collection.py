"""One step's groups: rollout -> reward -> advantage, with dynamic sampling's refills.

`collect_groups(trainer)` draws the step's prompts, samples G completions for each (rollout.py),
scores them with the task's rewards (rewards.py, tasks/) and turns the rewards into group
advantages (grpo.py). With `grpo.filter_zero_std_groups` a group whose G rewards are all equal
carries no gradient: it is dropped and more prompts are drawn, up to `max_refill_rounds` times.
Every rank draws the same prompts and keeps its own slice of whole groups.
"""

from __future__ import annotations

import math
import time

import torch

from smolgrpo.algo.advantages import group_advantages, zero_std_keep_mask
from smolgrpo.generation.rollout import Rollout, eos_token_ids, generate
from smolgrpo.models import distributed as dist_utils
from smolgrpo.tasks.data import Problem
from smolgrpo.tasks.prompts import render_prompt
from smolgrpo.training.batching import select_rows
from smolgrpo.training.guided_groups import add_reference_rows, clamp_reference_advantages


def prompts_for_rank(problems: list[Problem], rank: int, world_size: int) -> list[Problem]:
    per_rank = math.ceil(len(problems) / world_size)
    return problems[rank * per_rank : (rank + 1) * per_rank]


def collect_groups(trainer) -> tuple[list[Rollout], list[torch.Tensor], list[Problem], dict]:
    """Rollouts, rewards and advantages for this step, refilling zero-signal groups if asked."""
    config, G = trainer.config, trainer.config.sampling.num_generations
    guided = config.grpo.guided_groups  # the G-th row of a group: the reference solution
    kept_rollouts, kept_advantages, kept_problems = [], [], []
    kept_rewards: list[torch.Tensor] = []  # for `scale_rewards: batch`, over the whole step
    reward_log: dict[str, list[float]] = {}
    reward_times: dict[str, float] = {}  # seconds per reward: a slow plug-in shows up
    stats = {
        "groups_generated": 0,
        "zero_std_groups": 0,
        "generation_s": 0.0,
        "reward_s": 0.0,
        "generated_tokens": 0,
        "truncated": 0,
        "lengths": [],
        "problems": [],
        "responses": [],
        "totals": [],
        "calculator_tokens": 0,
        "reward_timeouts": 0,  # answer checks stopped at their time limit (sandbox.py)
        "reward_errors": 0,  # answer checks that raised, exited or crashed
        "rows_per_group": G - 1 if guided else G,  # the sampled rows the stats describe
    }
    rounds = 1 + (config.grpo.max_refill_rounds if config.grpo.filter_zero_std_groups else 0)
    quota = math.ceil(config.optim.prompts_per_step / trainer.world_size)  # groups per rank
    for _ in range(rounds):
        # Every rank must draw the same prompts from the stream to stay in step: draw
        # enough for the rank that lacks the most, then keep this rank's slice.
        deficit = int(dist_utils.all_max(float(quota - len(kept_problems))))
        problems = prompts_for_rank(
            trainer.stream.take(deficit * trainer.world_size), trainer.rank, trainer.world_size
        )
        trainer.phase("generating")
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
                calculator=trainer.calculator,
                cuda_graphs=config.sampling.cuda_graphs,
            )
        stats["generation_s"] += time.perf_counter() - started
        # Metrics describe the policy's samples: taken before the reference rows go in.
        stats["generated_tokens"] += int(rollout.completion_mask.sum())
        stats["truncated"] += int(rollout.truncated.sum())
        stats["lengths"].extend(rollout.completion_lengths.tolist())
        stats["responses"].extend(rollout.responses)
        if rollout.forced_mask is not None:
            stats["calculator_tokens"] += int(rollout.forced_mask.sum())
        sampled = torch.ones(len(problems) * G, dtype=torch.bool)
        if guided:
            eos = eos_token_ids(trainer.model, trainer.tokenizer)[0]
            rollout, is_reference = add_reference_rows(
                rollout, problems, trainer.tokenizer, trainer.template.prefill, eos
            )
            sampled = ~is_reference.cpu()
        trainer.phase("scoring")
        started = time.perf_counter()
        golds = [p.gold for p in problems for _ in range(G)]
        questions = [p.question for p in problems for _ in range(G)]
        scored = trainer.task.score(
            rollout.responses, golds, config.rewards.weights, questions, trainer.step + 1
        )
        stats["reward_s"] += time.perf_counter() - started
        stats["reward_timeouts"] += scored.timeouts
        stats["reward_errors"] += scored.errors
        rewards = torch.tensor(scored.total, dtype=torch.float32)  # (n * G,)
        # "batch" divides by the std of the step's kept groups once they are all in (below).
        scale = "none" if config.grpo.scale_rewards == "batch" else config.grpo.scale_rewards
        advantages, zero_std = group_advantages(rewards, G, scale)
        if guided:
            advantages = clamp_reference_advantages(advantages, is_reference.cpu())
        sampled_rows = sampled.tolist()
        for name, values in scored.per_reward.items():
            reward_log.setdefault(name, []).extend(
                v for v, keep in zip(values, sampled_rows) if keep
            )
            reward_times[name] = reward_times.get(name, 0.0) + scored.seconds[name]
        stats["totals"].extend(v for v, keep in zip(scored.total, sampled_rows) if keep)
        stats["groups_generated"] += len(problems)
        stats["zero_std_groups"] += int(zero_std.sum())
        stats["problems"].extend(problems)
        keep = ~zero_std if config.grpo.filter_zero_std_groups else torch.ones_like(zero_std)
        if keep.any():
            rows = zero_std_keep_mask(~keep, G).to(rollout.completion_ids.device)  # (n * G,)
            kept_rollouts.append(select_rows(rollout, rows))
            kept_advantages.append(advantages.to(rows.device)[rows])
            kept_rewards.append(rewards[rows.cpu()])
            kept_problems.extend(p for p, k in zip(problems, keep.tolist()) if k)
        if dist_utils.all_max(float(quota - len(kept_problems))) <= 0:
            break
    if config.grpo.scale_rewards == "batch":
        kept_advantages = scaled_by_step_std(kept_advantages, kept_rewards)
    stats["rewards"], stats["reward_times"] = reward_log, reward_times
    return kept_rollouts, kept_advantages, kept_problems, stats


def scaled_by_step_std(
    centred: list[torch.Tensor], rewards: list[torch.Tensor], eps: float = 1e-4
) -> list[torch.Tensor]:
    """`scale_rewards: batch`: each round's centred advantages divided by the std of the
    rewards of every group the step keeps, on all ranks, whatever refill round drew them."""
    values = torch.cat(rewards) if rewards else torch.zeros(0)  # (kept rows,)
    std = dist_utils.global_std(values)
    return [advantages / (std.to(advantages.device) + eps) for advantages in centred]
