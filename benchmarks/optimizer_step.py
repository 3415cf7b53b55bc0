"""AdamW's step on SmolLM2-135M's parameters three ways, side by side in one process: torch's
per-tensor loop (its CPU default), `foreach` and the fused kernel (what transformers' Trainer,
and so TRL, uses by default, and what smolgrpo uses since build_optimizer picks it).

    python benchmarks/optimizer_step.py [--repeats 5] [--threads 2]

The gradients are random (1e-3 scale); every side steps the same parameters, so only the time
is compared. Prints each side's step times and the median.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from smolgrpo.models.loading import load_model_and_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per side (5)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_model_and_tokenizer("embedded", device="cpu")
    parameters = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(0)
    for parameter in parameters:
        parameter.grad = torch.randn(parameter.shape, generator=generator) * 1e-3
    sides = {"per-tensor loop": dict(foreach=False), "foreach": dict(foreach=True),
             "fused": dict(fused=True)}  # fmt: skip
    print(f"{sum(p.numel() for p in parameters) / 1e6:.1f} M parameters, {args.threads} threads")
    medians = {}
    for name, options in sides.items():
        optimizer = torch.optim.AdamW(parameters, lr=1e-5, betas=(0.9, 0.99), **options)
        optimizer.step()  # state allocated outside the timing
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            optimizer.step()
            times.append(time.perf_counter() - started)
        medians[name] = statistics.median(times)
        print(f"{name:>16}: median {medians[name]:.3f} s  ({', '.join(f'{t:.3f}' for t in times)})")
    ratio = medians["per-tensor loop"] / medians["fused"]
    print(f"fused is {ratio:.1f}x the per-tensor loop")


if __name__ == "__main__":
    main()
