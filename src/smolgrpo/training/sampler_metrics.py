"""The step's sampler/* metrics: how far the training forward's log-probs are from the sampler's.

Every completion token the sampler drew has a ratio exp(old - sampler) (algo/loss.py,
`sampler_ratio`): 1 where the decode loop and the training forward agree exactly. Its mean, min
and max over the step's tokens (all ranks) are logged whether or not `grpo.sampler_ratio_cap`
applies the correction, with the share of tokens above the cap when it does, so a run shows
how much its sampler and its training forward disagree.
"""

from __future__ import annotations

import math

import torch

from smolgrpo.models import distributed as dist_utils


class SamplerRatioStats:
    """Sum, count, min and max of the measured (non-NaN) ratios added, and how many exceed
    `cap` (None or 0: the correction is off, nothing counted as capped)."""

    def __init__(self, cap: float | None):
        self.cap = cap or None
        self.total, self.count, self.capped = 0.0, 0, 0
        self.low, self.high = math.inf, -math.inf

    def add(self, ratio: torch.Tensor | None) -> None:
        """`ratio` (B, C), NaN where no token was measured (LossOutput.sampler_ratio)."""
        if ratio is None:
            return
        measured = ratio[~torch.isnan(ratio)]  # (M,)
        if measured.numel() == 0:
            return
        self.total += float(measured.double().sum())
        self.count += measured.numel()
        self.low = min(self.low, float(measured.min()))
        self.high = max(self.high, float(measured.max()))
        if self.cap is not None:
            self.capped += int((measured > self.cap).sum())

    def metrics(self) -> dict:
        """The step's sampler/* metrics over every rank ({} where no rank measured a token).
        A collective: every rank calls it."""
        count = dist_utils.all_sum(float(self.count))
        total = dist_utils.all_sum(self.total)
        low = -dist_utils.all_max(-self.low)
        high = dist_utils.all_max(self.high)
        capped = dist_utils.all_sum(float(self.capped))
        if count == 0:
            return {}
        row = {"sampler/ratio_mean": total / count, "sampler/ratio_min": low}
        row["sampler/ratio_max"] = high
        if self.cap is not None:
            row["sampler/capped_fraction"] = capped / count
        return row
