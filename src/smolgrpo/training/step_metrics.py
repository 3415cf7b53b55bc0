"""One step's metrics row (rewards, advantages, lengths, timings) from its collected groups."""

from __future__ import annotations

import statistics

import torch

from smolgrpo.models import distributed as dist_utils
from smolgrpo.rewards.answers import counts_as_correct
from smolgrpo.training.group_collection import CollectedGroups, GroupStats


def step_metrics(
    trainer, groups: CollectedGroups, losses: dict, timings: dict
) -> tuple[dict, list]:
    """(one metrics.jsonl row, the sample records for samples/step_N.jsonl) for a step."""
    stats = groups.stats
    rewards = {name: dist_utils.gather_objects(values) for name, values in stats.rewards.items()}
    totals = dist_utils.gather_objects(stats.totals)
    lengths = dist_utils.gather_objects(stats.lengths)
    group_count = dist_utils.all_sum(stats.groups_generated)
    generated_tokens = dist_utils.all_sum(stats.generated_tokens)
    metrics = {"step": trainer.step}
    for name, values in rewards.items():
        metrics[f"reward/{name}"] = statistics.fmean(values)
    metrics["reward_mean"] = statistics.fmean(totals)
    metrics["reward_std"] = statistics.pstdev(totals)
    if "correctness" in rewards:
        metrics["accuracy"] = statistics.fmean(counts_as_correct(v) for v in rewards["correctness"])
    for name in ("strict_format", "soft_format"):
        if name in rewards:
            metrics[f"{name}_rate"] = statistics.fmean(v == 1.0 for v in rewards[name])
    metrics.update(
        loss=losses["loss"],
        kl=losses["kl"],
        clip_fraction=losses["clip_fraction"],
        entropy=losses.get("entropy", 0.0),
        grad_norm=losses["grad_norm"],
        bad_steps=losses.get("bad_steps", 0),  # updates skipped for a NaN/inf (guards.py)
        learning_rate=trainer.scheduler.get_last_lr()[0],
        completion_length_mean=statistics.fmean(lengths),
        completion_length_max=max(lengths),
        truncation_rate=dist_utils.all_sum(stats.truncated) / max(len(lengths), 1),
        frac_zero_std_groups=dist_utils.all_sum(stats.zero_std_groups) / max(group_count, 1),
        groups_generated=int(group_count),
        groups_trained=int(dist_utils.all_sum(len(groups.problems))),
        generated_tokens=int(generated_tokens),
        tokens_per_s=generated_tokens / max(timings["step_s"], 1e-9),
        step_time_s=timings["step_s"],
        generation_s=stats.generation_s,
        reward_s=stats.reward_s,
        **{
            f"reward_time_s/{name}": dist_utils.all_max(seconds)  # the slowest rank's
            for name, seconds in stats.reward_times.items()
        },
        train_s=timings["train_s"],
        # answer checks scored 0 because they timed out or failed (sandbox.py), all ranks
        reward_timeouts=int(dist_utils.all_sum(stats.reward_timeouts)),
        reward_errors=int(dist_utils.all_sum(stats.reward_errors)),
    )
    # exp(old - sampler log-prob) over the drawn tokens (sampler_metrics.py)
    metrics.update({k: v for k, v in losses.items() if k.startswith("sampler/")})
    if trainer.tools is not None:  # calls per tool, and the tokens they wrote (not in the loss)
        metrics.update(tool_metrics(trainer.tools.names, stats))
    if trainer.device.type == "cuda":
        metrics["peak_memory_mb"] = torch.cuda.max_memory_allocated(trainer.device) / 2**20
    return metrics, sample_records(stats, trainer.step, trainer.config.run.log_num_prompts)


def tool_metrics(names: list[str], stats: GroupStats) -> dict:
    """`tools/calls`, `tools/errors` and `tools/tokens` (forced tokens) of the step, all ranks,
    then calls and errors per tool; `calculator_tokens` (its older name for the tokens) when the
    calculator is the only tool."""
    calls = {name: int(dist_utils.all_sum(stats.tool_calls.get(name, 0))) for name in names}
    errors = {name: int(dist_utils.all_sum(stats.tool_errors.get(name, 0))) for name in names}
    tokens = int(dist_utils.all_sum(stats.calculator_tokens))
    metrics = {
        "tools/calls": sum(calls.values()),
        "tools/errors": sum(errors.values()),
        "tools/tokens": tokens,
    }
    for name in names:
        metrics[f"tools/calls/{name}"] = calls[name]
        metrics[f"tools/errors/{name}"] = errors[name]
    if names == ["calculator"]:
        metrics["calculator_tokens"] = tokens
    return metrics


def sample_records(stats: GroupStats, step: int, num_prompts: int) -> list[dict]:
    """The first `num_prompts` groups of this rank, each with its sampled completions."""
    G = stats.rows_per_group  # the sampled rows of a group (G - 1 with guided groups)
    samples = []
    for index, problem in enumerate(stats.problems[:num_prompts]):
        rows = range(index * G, (index + 1) * G)
        samples.append(
            {
                "step": step,
                "origin": problem.origin,
                "question": problem.question,
                "gold": problem.gold,
                "completions": [
                    {
                        "text": stats.responses[row],
                        "total_reward": stats.totals[row],
                        "rewards": {name: stats.rewards[name][row] for name in stats.rewards},
                    }
                    for row in rows
                ],
            }
        )
    return samples
