"""A recipe to a validated `Config`: the YAML file, then the `--set` overrides, then each
section built and checked (one-line errors naming the file, the key or the `--set`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from smolgrpo.config.parse import apply_overrides, build_section, read_recipe
from smolgrpo.config.schema import Config
from smolgrpo.errors import SmolGRPOError


def config_from_dict(raw: dict, origin: str = "config", overridden: tuple = ()) -> Config:
    """`overridden`: the `section.key`s that `--set` gave (their errors name the --set)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SmolGRPOError(f"{origin}: top level must be a mapping of sections")
    sections = {f.name: f for f in dataclasses.fields(Config)}
    built = {}
    for name, values in raw.items():
        if name not in sections:
            where = next((f"--set {k}" for k in overridden if k.split(".")[0] == name), origin)
            raise SmolGRPOError(f"{where}: unknown section '{name}' (valid: {', '.join(sections)})")
        built[name] = build_section(
            sections[name].default_factory, values or {}, name, origin, overridden
        )
    weights_given = isinstance(raw.get("rewards"), dict) and "weights" in raw["rewards"]
    return Config(**built).validate(weights_given)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    raw: dict = {}
    origin = "config"
    if path is not None:
        origin = str(path)
        raw = read_recipe(Path(path))
    overridden = apply_overrides(raw, overrides or [])  # checks each is section.key=value
    return config_from_dict(raw, origin, overridden)
