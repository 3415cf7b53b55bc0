"""One SFT forward + backward with the output head on target tokens only (sft.sft_token_nll's
default) against the full (B, T, V) logits, side by side in one process, on the embedded model.

    SMOLGRPO_DATA_DIR=../shared/data/gsm8k python benchmarks/sft_step.py [--examples 16] [--repeats 3]

Both sides must give the same loss; the script prints it for each. First it counts the padded
tokens of SFT micro-batches cut in stream order and from length-sorted examples (what
SFTTrainer.train_step does) over 3,200 shuffled train examples, at the recipes' batch sizes.
"""

from __future__ import annotations

import argparse
import random
import time

from smolgrpo.config import load_config
from smolgrpo.modeling import load_model_and_tokenizer
from smolgrpo.prompts import PromptTemplate
from smolgrpo.sft import build_sft_batch, encode_example, load_sft_problems, sft_token_nll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=16, help="one micro-batch (16)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (3)")
    args = parser.parse_args()
    config = load_config("recipes/cpu-sft.yaml", [])
    model, tokenizer = load_model_and_tokenizer("embedded", device="cpu")
    model.train()
    problems = load_sft_problems(config)[: args.examples]
    examples = [
        encode_example(tokenizer, p, PromptTemplate(), [], 512, tokenizer.eos_token_id)
        for p in problems
    ]
    padding(config, tokenizer)
    batch = build_sft_batch(examples, tokenizer.pad_token_id)
    targets = int(batch.loss_mask[:, 1:].sum())
    print(f"{args.examples} examples: {batch.input_ids.numel()} padded tokens, {targets} targets")
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):
        for targets_only in (False, True):
            started = time.perf_counter()
            nll, _ = sft_token_nll(model, batch, targets_only)
            nll.backward()
            model.zero_grad(set_to_none=True)
            times[targets_only].append(time.perf_counter() - started)
            print(f"  targets_only={targets_only}: loss sum {float(nll.detach()):.3f}", flush=True)
    for targets_only, seconds in times.items():
        label = "head on targets only" if targets_only else "full logits"
        print(f"{label}: " + ", ".join(f"{s:.1f}" for s in seconds) + " s")


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
