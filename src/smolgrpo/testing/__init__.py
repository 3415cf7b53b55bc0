"""Tiny in-process models for tests and dry runs (no download)."""
