"""The tools a model may call while it writes (`sampling.tools`, `smolgrpo eval --tools`): their
names checked when the config loads, and `tools.json`, saved beside a trained model.

A tool is `calculator` (built in: generation/calculator.py) or your own function, named as a
reward plug-in is (rewards/plugins.py): `path/to/file.py:function` or `package.module:function`.
Its name in the model's text is the function's name (`my_tools.py:lookup` is called as
`lookup(...)`). The calls themselves are made by generation/tools.py; docs/tools.md has the
syntax and the limits.
"""

from __future__ import annotations

import json
from pathlib import Path

from smolgrpo.errors import SmolGRPOError
from smolgrpo.rewards.plugins import is_plugin, load_plugin

BUILTIN_TOOLS = ("calculator",)
TOOLS_FILE = "tools.json"  # beside a trained model: what `eval` calls by default
CALL_SYNTAX = "name(arguments) ="  # how the model calls a named tool (generation/tools.py)


def tool_name(spec: str) -> str:
    """ "calculator" -> "calculator"; "my_tools.py:lookup" -> "lookup"."""
    return spec if spec in BUILTIN_TOOLS else spec.rpartition(":")[2]


def check_tool_specs(specs, key: str = "sampling.tools") -> None:
    """One SmolGRPOError line naming `key` for an unknown tool, a plug-in that does not load
    or is not callable, or two tools of one name."""
    if not isinstance(specs, list | tuple):
        raise SmolGRPOError(f"{key}: expected a list of tools, got {specs!r}")
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, str) or not (spec in BUILTIN_TOOLS or is_plugin(spec)):
            raise SmolGRPOError(
                f"{key}: unknown tool {spec!r} (valid: {', '.join(BUILTIN_TOOLS)}, "
                "or module:function / file.py:function)"
            )
        if spec not in BUILTIN_TOOLS:
            load_plugin(spec, key, "tool")  # importable and callable, or one line naming it
        name = tool_name(spec)
        if not name.isidentifier():
            raise SmolGRPOError(f"{key}: tool '{spec}': '{name}' is not a Python name")
        if name in seen:
            raise SmolGRPOError(f"{key}: two tools are called '{name}'")
        seen.add(name)


def save_tools(path: Path, specs: list[str], timeout_s: float, max_output_chars: int) -> None:
    """Write the tools a model was trained with (read back by `load_saved_tools`)."""
    fields = {
        "tools": list(specs),
        "syntax": CALL_SYNTAX,
        "timeout_s": timeout_s,
        "max_output_chars": max_output_chars,
    }
    Path(path).write_text(json.dumps(fields, indent=2) + "\n", encoding="utf-8")


def load_saved_tools(path: Path) -> dict:
    """A saved `tools.json` (tools, timeout_s, max_output_chars), or one line naming the file."""
    try:
        fields = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SmolGRPOError(f"{path}: unreadable ({' '.join(str(error).split())})") from None
    numbers = (int, float)
    if (
        not isinstance(fields, dict)
        or not isinstance(fields.get("tools"), list)
        or not isinstance(fields.get("timeout_s"), numbers)
        or not isinstance(fields.get("max_output_chars"), int)
    ):
        raise SmolGRPOError(f"{path}: expected tools, timeout_s and max_output_chars")
    return fields
