"""smolgrpo: teach small language models to reason with GRPO.

The package reads as the pipeline it implements:

    data.py      GSM8K problems (hub or local JSONL), validated row by row
    prompts.py   chat prompts, system prompt, assistant prefill, few-shot examples
    modeling.py  model + tokenizer loading (hub id, local dir, .gguf, or the embedded SmolLM2)
    rollout.py   batched sampling of completions with the KV cache
    rewards.py   pure reward functions and their registry
    grpo.py      the GRPO math: group advantages, per-token log-probs, clipped loss, KL
    trainer.py   the loop: rollout -> reward -> advantage -> loss -> step -> log -> checkpoint
    evaluate.py  accuracy / format rate / pass@k on a split, with the rewards' own answer check
    cli.py       `smolgrpo eval | train | report`
"""

__version__ = "0.1.0"
