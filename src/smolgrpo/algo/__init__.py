"""GRPO's tensor math: group advantages, per-token log-probs, the clipped loss and KL."""
