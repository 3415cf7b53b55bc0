"""Evaluating a model on a split, and the statistics of its results."""
