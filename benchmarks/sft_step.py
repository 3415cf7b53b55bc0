"""One SFT step's forwards + backwards three ways, side by side in one process, on the embedded
model: the full (B, T, V) logits; the output head on target tokens only; and that plus the
micro-batch's shared opening (chat header + system prompt) run once through the KV cache
(sft.sft_token_nll's default). Micro-batches are cut from length-sorted examples, as
SFTTrainer.train_step does.

    SMOLGRPO_DATA_DIR=../shared/data/gsm8k python benchmarks/sft_step.py [--examples 16]
        [--micro-batch 8] [--repeats 3] [--dtype float32|bfloat16] [--variant shared ...] [--compile]

All three must give the same loss; the script prints it for each. `--compile` adds each variant
again with the model's forward under torch.compile (dynamic shapes; its first round includes the
compilation, so compare the later rounds). First it counts the padded
tokens of SFT micro-batches cut in stream order and from length-sorted examples (what
SFTTrainer.train_step does) over 3,200 shuffled train examples, at the recipes' batch sizes.
"""

from __future__ import annotations

import argparse
import random
import resource
import time

import torch

from smolgrpo.config.loading import load_config
from smolgrpo.models.loading import load_model_and_tokenizer
from smolgrpo.tasks.prompts import PromptTemplate
from smolgrpo.training.sft import (
    build_sft_batch,
    encode_example,
    load_sft_problems,
    sft_token_nll,
    shared_prefix_length,
)

VARIANTS = {  # name: (label, targets_only, share_prefix)
    "full": ("full logits", False, False),
    "targets": ("head on targets only", True, False),
    "shared": ("targets only + shared prefix", True, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=16, help="one optimizer step (16)")
    parser.add_argument("--micro-batch", type=int, default=8, help="micro-batch size (8)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--variant", action="append", choices=list(VARIANTS), help="only these (repeatable)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="also each variant with torch.compile'd forward"
    )
    args = parser.parse_args()
    variants = [(*VARIANTS[name], False) for name in args.variant or VARIANTS]
    if args.compile:
        variants += [(f"{label}, compiled", *rest, True) for label, *rest, _ in variants]
    config = load_config("recipes/cpu-sft.yaml", [])
    model, tokenizer = load_model_and_tokenizer("embedded", device="cpu")
    model.train()
    problems = load_sft_problems(config)[: args.examples]
    examples = sorted(
        (
            encode_example(tokenizer, p, PromptTemplate(), [], 512, tokenizer.eos_token_id)
            for p in problems
        ),
        key=lambda example: len(example[0]),
    )
    padding(config, tokenizer)
    batches = [
        build_sft_batch(examples[start : start + args.micro_batch], tokenizer.pad_token_id)
        for start in range(0, len(examples), args.micro_batch)
    ]
    padded = sum(batch.input_ids.numel() for batch in batches)
    targets = sum(int(batch.loss_mask[:, 1:].sum()) for batch in batches)
    shared = [shared_prefix_length(batch) for batch in batches]
    print(
        f"{args.examples} examples in micro-batches of {args.micro_batch}: {padded} padded tokens, "
        f"{targets} targets, shared prefix {shared} tokens; {args.dtype}"
    )
    dtype = getattr(torch, args.dtype)
    times: dict[str, list[float]] = {label: [] for label, *_ in variants}
    plain_forward = model.forward
    compiled_forward = torch.compile(plain_forward, dynamic=True) if args.compile else None
    for _ in range(args.repeats):
        for label, targets_only, share_prefix, compiled in variants:
            model.forward = compiled_forward if compiled else plain_forward
            started = time.perf_counter()
            loss = 0.0
            for batch in batches:
                with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                    nll, _ = sft_token_nll(model, batch, targets_only, share_prefix)
                nll.backward()
                loss += float(nll.detach())
            model.zero_grad(set_to_none=True)
            times[label].append(time.perf_counter() - started)
            print(f"  {label}: loss sum {loss:.3f}", flush=True)
    model.forward = plain_forward
    for label, seconds in times.items():
        examples_per_s = ", ".join(f"{args.examples / s:.2f}" for s in seconds)
        print(
            f"{label}: "
            + ", ".join(f"{s:.1f}" for s in seconds)
            + f" s ({examples_per_s} examples/s)"
        )
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"peak resident memory of the process: {peak_gb:.1f} GiB")


def padding(config, tokenizer, count: int = 3200) -> None:
    problems = load_sft_problems(config)
    random.Random(0).shuffle(problems)
    lengths = [
        len(encode_example(tokenizer, p, PromptTemplate(), [], 512, tokenizer.eos_token_id)[0])
        for p in problems[:count]
    ]

    def padded(step: int, micro: int, sort: bool) -> int:
        total = 0
        for start in range(0, len(lengths) - step + 1, step):
            chunk = sorted(lengths[start : start + step]) if sort else lengths[start : start + step]
            total += sum(
                max(chunk[m : m + micro]) * len(chunk[m : m + micro]) for m in range(0, step, micro)
            )
        return total

    real = sum(lengths)
    for step, micro in ((16, 8), (32, 16), (32, 8)):
        plain, ordered = padded(step, micro, False), padded(step, micro, True)
        print(
            f"{step} examples a step, micro-batch {micro}: padded tokens {plain / real:.2f}x the "
            f"real ones in stream order, {ordered / real:.2f}x sorted ({1 - ordered / plain:.0%} fewer)"
        )


if __name__ == "__main__":
    main()
