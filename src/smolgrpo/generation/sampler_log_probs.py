"""The sampler's own log-probs of the tokens it drew, recorded during decode.

The decode loops (rollout.py, graph_decode.py) draw each token from logits that a KV-cache
forward computed with the sampler's numerics: bf16 autocast, a static cache, CUDA graphs. The
training forward that scores the same tokens (training/log_probs.py) runs the whole sequence
at once and rounds differently, so its "old" log-probs are not exactly those of the
distribution that drew the tokens. Recording log p_sampler of every drawn token lets the loss
weight each token by the truncated ratio exp(old - sampler) (algo/loss.py,
`grpo.sampler_ratio_cap`) and the metrics show the mismatch.

The log-prob is taken from the very logits the sampler drew from, after the temperature (in
float32, as the sampler divides) and after any top-k / top-p filter: the distribution that
was actually sampled. The sampled token is drawn outside the CUDA graph (graph_decode.py
captures only the model's forward), so its log-prob is computed there too, by the same code
for every decode path; it costs a log-sum-exp over the vocabulary per step, a few kernels
beside a step's thousands.
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


def drawn_log_probs(
    logits: Tensor, tokens: Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0
) -> Tensor:
    """(N,) log-prob of each row's drawn token under the sampler's distribution: the
    log-softmax of `sampling_logits` at `tokens` (N,)."""
    tempered = sampling_logits(logits, temperature, top_p, top_k)  # (N, V)
    chosen = tempered.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (N,)
    return chosen - torch.logsumexp(tempered, dim=-1)  # (N,)


class SamplerLogProbs:
    """The (N, budget) log-probs of a decode's drawn tokens, NaN where none was drawn (rows
    that had finished, and steps never reached). Greedy decoding records nothing: build it
    only for temperature > 0."""

    def __init__(self, rows: int, budget: int, device, temperature, top_p=1.0, top_k=0):
        self.values = torch.full((rows, budget), float("nan"), device=device)  # (N, budget)
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k

    def record(self, step: int, logits: Tensor, tokens: Tensor, rows: Tensor | None = None):
        """`tokens` (n,) were drawn from `logits` (n, V) at `step`, for `rows` (n,) of the
        batch (None: every row)."""
        log_probs = drawn_log_probs(logits, tokens, self.temperature, self.top_p, self.top_k)
        if rows is None:
            self.values[:, step] = log_probs
        else:
            self.values[rows, step] = log_probs

    def result(self, width: int) -> Tensor:
        return self.values[:, :width]  # (N, C)
