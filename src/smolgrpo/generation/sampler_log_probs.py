"""The sampler's own log-probs of the tokens it drew, recorded during decode.

The decode loops (rollout.py, graph_decode.py) draw each token from logits that a KV-cache
forward computed with the sampler's numerics: bf16 autocast, a static cache, CUDA graphs. The
training forward that scores the same tokens (training/log_probs.py) runs the whole sequence
at once and rounds differently, so its "old" log-probs are not exactly those of the
distribution that drew the tokens. Recording log p_sampler of every drawn token lets the loss
weight each token by the truncated ratio exp(old - sampler) (algo/loss.py,
`grpo.sampler_ratio_cap`) and the metrics show the mismatch.

The log-prob is read from the very probabilities the sampler drew from, after the
temperature (in float32) and any top-k / top-p filter: the distribution that was actually
sampled. It costs a gather and a log of N values per step. The token is drawn outside the CUDA
graph (graph_decode.py captures only the model's forward), so its log-prob is read there too,
by the same code on every decode path.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sampling_logits(logits: Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0):
    """(N, V) float32 logits the sampler draws from: `logits / temperature` (divided after the
    upcast) with the tokens outside the top_k and the top_p nucleus at -inf. temperature > 0."""
    logits = logits.float() / temperature  # (N, V)
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (N, V)
        sorted_probabilities = sorted_logits.softmax(dim=-1)  # (N, V)
        # Drop a token when the tokens ranked above it already hold top_p of the mass; the
        # most likely token is always kept.
        drop = sorted_probabilities.cumsum(dim=-1) - sorted_probabilities >= top_p  # (N, V)
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return logits


def sample_with_log_probs(
    logits: Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0
) -> tuple[Tensor, Tensor]:
    """(N,) tokens drawn from softmax(`sampling_logits`) of (N, V) `logits`, and (N,) the
    log of the probability each was drawn with. temperature > 0."""
    probabilities = sampling_logits(logits, temperature, top_p, top_k).softmax(dim=-1)  # (N, V)
    tokens = torch.multinomial(probabilities, num_samples=1)  # (N, 1)
    return tokens.squeeze(-1), probabilities.gather(-1, tokens).squeeze(-1).log()  # (N,), (N,)


class SamplerLogProbs:
    """The (N, budget) log-probs of a decode's drawn tokens, NaN where none was drawn (rows
    that had finished, and steps never reached)."""

    def __init__(self, rows: int, budget: int, device):
        self.values = torch.full((rows, budget), float("nan"), device=device)  # (N, budget)

    def record(self, step: int, log_probs: Tensor, rows: Tensor | None = None) -> None:
        """`log_probs` (n,) of the tokens drawn at `step` for `rows` (n,) of the batch (None:
        every row)."""
        if rows is None:
            self.values[:, step] = log_probs
        else:
            self.values[rows, step] = log_probs

    def result(self, width: int) -> Tensor:
        return self.values[:, :width]  # (N, C)
