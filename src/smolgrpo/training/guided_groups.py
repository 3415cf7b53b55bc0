"""Guided groups: the last row of each GRPO group is the problem's reference solution.

A model that almost never samples a right answer gives GRPO almost nothing to learn from: on
CPU the SFT-warmed 135M model is right on under one of a step's 32 samples. LUFFY (Yan et al.,
2025, "Learning to Reason under Off-Policy Guidance") puts expert traces into the groups
instead. With `grpo.guided_groups` the sampler draws G - 1 completions per prompt, and the G-th
row of each group is the reference solution in the response format
(`prompts.format_reference_response`, what `smolgrpo sft` trains on). It is scored by the same
rewards and gets the group's advantage, clamped at 0: when the samples are wrong it is the one
pulled up and they are pushed down, so the update is an advantage-weighted SFT step on the
reference plus the usual GRPO step on the samples. It is never pushed down: the rewards beside
correctness (format, grounded arithmetic) can score it below right samples, and, as LUFFY
assumes, off-policy guidance is taken to be right (clamp_reference_advantages). The reference is not the policy's sample:
training metrics (rewards, lengths, truncation) are taken over the sampled rows only.

It needs worked solutions (GSM8K, or a file task with `data.solution_field`), and a prompt
prefill that begins the reference response (the default `<reasoning>\\n` does).
"""

from __future__ import annotations

import torch

from smolgrpo.errors import SmolGRPOError
from smolgrpo.generation.rollout import Rollout
from smolgrpo.tasks.data import Problem
from smolgrpo.tasks.prompts import format_reference_response


def reference_completion_ids(tokenizer, problem: Problem, prefill: str, eos_id: int) -> list[int]:
    """The reference response after the prompt's prefill, tokenized as a completion, + EOS."""
    response = format_reference_response(problem)
    if not response.startswith(prefill):
        raise SmolGRPOError(
            f"grpo.guided_groups: the prompt's prefill {prefill!r} does not begin the reference "
            f"response ({response[:20]!r}...); use the default prefill or turn guided_groups off"
        )
    return tokenizer(response[len(prefill) :], add_special_tokens=False)["input_ids"] + [eos_id]


def clamp_reference_advantages(
    advantages: torch.Tensor, is_reference: torch.Tensor
) -> torch.Tensor:
    """(N,) advantages with the reference rows' clamped at 0 (the gold is never pushed down);
    the sampled rows keep theirs."""
    is_reference = is_reference.to(advantages.device)
    return torch.where(is_reference, advantages.clamp(min=0.0), advantages)  # (N,)


def add_reference_rows(
    rollout: Rollout, problems: list[Problem], tokenizer, prefill: str, eos_id: int
) -> tuple[Rollout, torch.Tensor]:
    """`rollout` holds G - 1 adjacent rows per problem; returns G rows per problem, the reference
    last in each group, and the (N,) bool mask of the reference rows."""
    n = len(problems)
    total, width = rollout.completion_ids.shape
    sampled = total // n  # G - 1
    references = [reference_completion_ids(tokenizer, p, prefill, eos_id) for p in problems]
    width = max([width] + [len(ids) for ids in references])
    device = rollout.completion_ids.device

    def grouped(rows: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """(n * (G-1), ...) + one (n, ...) row per group -> (n * G, ...), groups adjacent."""
        rows = rows.reshape(n, sampled, *rows.shape[1:])
        return torch.cat([rows, extra.unsqueeze(1)], dim=1).flatten(0, 1)

    def widened(rows: torch.Tensor, value: float) -> torch.Tensor:  # (N, C) -> (N, width)
        pad = torch.full((rows.shape[0], width - rows.shape[1]), value, dtype=rows.dtype)
        return torch.cat([rows, pad.to(device)], dim=1)

    reference_ids = torch.full((n, width), tokenizer.pad_token_id, dtype=torch.long)
    reference_mask = torch.zeros((n, width), dtype=torch.long)
    for row, ids in enumerate(references):
        reference_ids[row, : len(ids)] = torch.tensor(ids)
        reference_mask[row, : len(ids)] = 1
    first = torch.arange(n, device=device) * sampled  # each group's first sampled row
    forced, drawn = rollout.forced_mask, rollout.sampler_log_probs
    guided = Rollout(
        prompt_ids=grouped(rollout.prompt_ids, rollout.prompt_ids[first]),
        prompt_mask=grouped(rollout.prompt_mask, rollout.prompt_mask[first]),
        completion_ids=grouped(
            widened(rollout.completion_ids, tokenizer.pad_token_id), reference_ids.to(device)
        ),
        completion_mask=grouped(
            widened(rollout.completion_mask, 0), reference_mask.to(rollout.completion_mask)
        ),
        truncated=grouped(rollout.truncated, torch.zeros(n, dtype=torch.bool, device=device)),
        responses=[
            response
            for index, problem in enumerate(problems)
            for response in rollout.responses[index * sampled : (index + 1) * sampled]
            + [format_reference_response(problem)]
        ],
        forced_mask=None
        if forced is None
        else grouped(widened(forced, 0), torch.zeros((n, width), dtype=forced.dtype).to(device)),
        # the reference was not drawn by the sampler: NaN, no correction
        sampler_log_probs=None
        if drawn is None
        else grouped(widened(drawn, float("nan")), torch.full((n, width), float("nan")).to(drawn)),
    )
    is_reference = torch.zeros((n, sampled + 1), dtype=torch.bool)
    is_reference[:, -1] = True
    return guided, is_reference.flatten().to(device)
