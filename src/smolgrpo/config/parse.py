"""Parsing a recipe's raw YAML mapping: reading the file, `--set section.key=value` overrides,
one section's keys checked against its dataclass (unknown keys and wrong types as one-line errors
naming the file or the --set), and the one-line value check the sections in schema.py use."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml

from smolgrpo.errors import SmolGRPOError


def type_ok(value, annotation) -> bool:
    """A small structural type check for the annotations used in this module."""
    hint = annotation
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(type_ok(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(hint) or hint)


def build_section(cls, values: dict, section: str, origin: str, overridden=()):
    if not isinstance(values, dict):
        raise SmolGRPOError(f"{origin}: section '{section}' must be a mapping")
    known = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = dict(values)
    for key, value in values.items():
        # A value given with --set is blamed on the --set, not on the recipe file.
        origin_of_key = f"--set {section}.{key}" if f"{section}.{key}" in overridden else origin
        if key not in known:
            raise SmolGRPOError(
                f"{origin_of_key}: unknown key '{section}.{key}' (valid: {', '.join(known)})"
            )
        if isinstance(value, str) and float in typing.get_args(hints[key]) + (hints[key],):
            try:  # YAML reads "1e-5" (no dot) as a string
                values[key] = value = float(value)
            except ValueError:
                pass
        if not type_ok(value, hints[key]):
            raise SmolGRPOError(
                f"{origin_of_key}: '{section}.{key}' should be {known[key].type}, got {value!r}"
            )
    return cls(**values)


def apply_overrides(raw: dict, overrides: list[str]) -> tuple[str, ...]:
    """`section.key=value` strings applied onto a raw config mapping in place (values parsed
    as YAML). `section.key.entry=value` sets one entry of a mapping the recipe gives (for
    instance `rewards.weights.overlong_penalty=1.0` adds a reward to the recipe's weights).
    Returns the `section.key` each override set, for errors that blame the --set."""
    overridden = []
    for override in overrides:
        if "=" not in override or "." not in override.split("=", 1)[0]:
            raise SmolGRPOError(f"--set '{override}': expected section.key=value")
        dotted, text = override.split("=", 1)
        section, key, *entry = dotted.split(".", 2)  # an entry may hold dots: file.py:fn
        overridden.append(f"{section}.{key}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise SmolGRPOError(f"--set '{override}': section '{section}' is not a mapping")
        if not entry:
            raw[section][key] = value
            continue
        mapping = raw[section].get(key)
        if not isinstance(mapping, dict):
            raise SmolGRPOError(
                f"--set '{override}': the recipe gives no mapping '{section}.{key}' to set an "
                f"entry of; give the whole mapping: --set '{section}.{key}={{name: value}}'"
            )
        raw[section][key] = {**mapping, entry[0]: value}
    return tuple(overridden)


def read_recipe(path: Path) -> dict:
    """A recipe file's raw mapping; a missing, unreadable, non-UTF-8 or malformed file is one
    line naming it (and the line, for bad YAML)."""
    if path.is_dir():
        raise SmolGRPOError(f"{path}: a folder, not a recipe file")
    if not path.is_file():
        raise SmolGRPOError(f"{path}: recipe file not found")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SmolGRPOError(f"{path}: cannot read the recipe ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise SmolGRPOError(f"{path}:{line}: not UTF-8 text (a YAML recipe is text)") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise SmolGRPOError(f"{path}{where}: invalid YAML") from None


def check_value(ok: bool, key: str, value, allowed: str) -> None:
    """One line naming the key, the value and what is allowed (`>= 2`, `one of a, b`)."""
    if not ok:
        raise SmolGRPOError(f"config: invalid value for '{key}': {value!r} (must be {allowed})")


def one_of(choices) -> str:
    return "one of " + ", ".join(choices)
