"""The GRPO and SFT loops, group collection and the optimizer step."""
