"""What one step trains on: the resumable prompt stream and the padded batch of groups."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from smolgrpo.generation.rollout import Rollout
from smolgrpo.tasks.data import Problem


# ----------------------------------------------------------------------------- data order
class PromptStream:
    """Endless, resumable stream of training problems: reshuffled each epoch with seed + epoch."""

    def __init__(self, problems: list[Problem], seed: int, epoch: int = 0, index: int = 0):
        self.problems, self.seed, self.epoch, self.index = problems, seed, epoch, index
        self._order = self._shuffled(epoch)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.problems)))
        random.Random(self.seed + epoch).shuffle(order)
        return order

    def take(self, count: int) -> list[Problem]:
        batch = []
        for _ in range(count):
            if self.index >= len(self._order):
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._shuffled(self.epoch)
            batch.append(self.problems[self._order[self.index]])
            self.index += 1
        return batch

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}


# ----------------------------------------------------------------------------- batch of groups
@dataclass
class GroupBatch:
    """What one optimizer step trains on: this rank's groups, G completions each."""

    prompt_ids: torch.Tensor  # (N, P) left-padded; the G rows of a group are adjacent
    prompt_mask: torch.Tensor  # (N, P)
    completion_ids: torch.Tensor  # (N, C) right-padded
    completion_mask: torch.Tensor  # (N, C) tokens that enter the loss
    advantages: torch.Tensor  # (N,)
    # (N, C) the sampler's log-probs of its drawn tokens, NaN elsewhere (None: no rollout had them)
    sampler_log_probs: torch.Tensor | None = None


def _pad_cat(tensors: list[torch.Tensor], value: float, left: bool) -> torch.Tensor:
    width = max(t.shape[1] for t in tensors)
    padded = []
    for t in tensors:
        pad = torch.full((t.shape[0], width - t.shape[1]), value, dtype=t.dtype, device=t.device)
        padded.append(torch.cat([pad, t] if left else [t, pad], dim=1))
    return torch.cat(padded, dim=0)


def build_group_batch(
    rollouts: list[Rollout], advantages: list[torch.Tensor], pad_token_id: int, mask_truncated: bool
) -> GroupBatch:
    prompt_ids = _pad_cat([r.prompt_ids for r in rollouts], pad_token_id, left=True)  # (N, P)
    prompt_mask = _pad_cat([r.prompt_mask for r in rollouts], 0, left=True)  # (N, P)
    completion_ids = _pad_cat(
        [r.completion_ids for r in rollouts], pad_token_id, left=False
    )  # (N, C)
    completion_mask = _pad_cat([r.completion_mask for r in rollouts], 0, left=False)  # (N, C)
    if mask_truncated:
        truncated = torch.cat([r.truncated for r in rollouts])  # (N,)
        completion_mask = completion_mask * (~truncated).unsqueeze(1)  # (N, C)
    if any(r.forced_mask is not None for r in rollouts):  # the calculator's tokens: no loss
        forced = _pad_cat([_forced(r) for r in rollouts], 0, left=False)  # (N, C)
        completion_mask = completion_mask * ~forced
    sampler_log_probs = None
    if any(r.sampler_log_probs is not None for r in rollouts):
        sampler_log_probs = _pad_cat(
            [_sampler_log_probs(r) for r in rollouts], float("nan"), left=False
        )  # (N, C)
    return GroupBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask.float(),
        advantages=torch.cat(advantages),
        sampler_log_probs=sampler_log_probs,
    )


def _forced(rollout: Rollout) -> torch.Tensor:
    if rollout.forced_mask is None:
        return torch.zeros_like(rollout.completion_ids, dtype=torch.bool)
    return rollout.forced_mask


def _sampler_log_probs(rollout: Rollout) -> torch.Tensor:
    if rollout.sampler_log_probs is None:  # nothing recorded: no correction, no measurement
        return torch.full_like(rollout.completion_ids, float("nan"), dtype=torch.float32)
    return rollout.sampler_log_probs


def select_rows(rollout: Rollout, rows: torch.Tensor) -> Rollout:
    indices = rows.nonzero().flatten().tolist()
    return Rollout(
        prompt_ids=rollout.prompt_ids[rows],
        prompt_mask=rollout.prompt_mask[rows],
        completion_ids=rollout.completion_ids[rows],
        completion_mask=rollout.completion_mask[rows],
        truncated=rollout.truncated[rows],
        responses=[rollout.responses[i] for i in indices],
        forced_mask=None if rollout.forced_mask is None else rollout.forced_mask[rows],
        sampler_log_probs=None
        if rollout.sampler_log_probs is None
        else rollout.sampler_log_probs[rows],
    )
