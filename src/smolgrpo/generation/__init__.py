"""Sampling completions: the decode loop, KV cache, CUDA graphs, calculator and tools."""
