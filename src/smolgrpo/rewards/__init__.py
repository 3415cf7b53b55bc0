"""Reward functions, their registry and weights, answer parsing, user plug-ins."""
