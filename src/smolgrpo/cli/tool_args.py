"""The tool flags of `smolgrpo eval`: `--tools`, `--calculator` and the two limits.

Without `--tools`, eval calls the tools the model was trained with (`tools.json` beside it,
config/tools.py), with the limits it was trained with; `--tools none` turns them off. A flag
overrides what is saved. Bad values are one `error:` line naming the flag.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from smolgrpo.config.schema import SamplingConfig
from smolgrpo.config.tools import TOOLS_FILE, check_tool_specs, load_saved_tools
from smolgrpo.errors import SmolGRPOError

_DEFAULTS = {f.name: f.default for f in fields(SamplingConfig)}


def add_tool_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--calculator",
        action="store_true",
        help="write the exact result after each 'expression =' the model writes (the GSM8K "
        "paper's calculator; off: the model's own arithmetic is measured)",
    )
    group.add_argument(
        "--tools",
        default=None,
        help="tools the model may call, comma-separated: calculator and file.py:function / "
        f"module:function (docs/tools.md); 'none' for none (default: the model's saved "
        f"{TOOLS_FILE}, else none)",
    )
    group.add_argument(
        "--tool-timeout-s",
        type=float,
        default=None,
        help="seconds a call of your own tool may take; then its result is an error text "
        f"(default: the saved one, else {_DEFAULTS['tool_timeout_s']:g})",
    )
    group.add_argument(
        "--tool-max-output-chars",
        type=int,
        default=None,
        help="a tool's result is cut to this many characters (default: the saved one, else "
        f"{_DEFAULTS['tool_max_output_chars']})",
    )


def tool_fields_from_args(args) -> dict:
    """{"tools", "timeout_s", "max_output_chars"}: the flags over the model's saved tools.json
    over the defaults; every tool checked (importable and callable)."""
    resolved = {
        "tools": [],
        "timeout_s": _DEFAULTS["tool_timeout_s"],
        "max_output_chars": _DEFAULTS["tool_max_output_chars"],
    }
    saved = Path(args.model) / TOOLS_FILE
    if saved.is_file():
        resolved.update({key: load_saved_tools(saved)[key] for key in resolved})
    if args.tools is not None:
        names = [name.strip() for name in args.tools.split(",") if name.strip()]
        resolved["tools"] = [] if names == ["none"] else names
    if args.calculator and "calculator" not in resolved["tools"]:
        resolved["tools"] = ["calculator", *resolved["tools"]]
    if args.tool_timeout_s is not None:
        resolved["timeout_s"] = args.tool_timeout_s
    if args.tool_max_output_chars is not None:
        resolved["max_output_chars"] = args.tool_max_output_chars
    check_tool_specs(resolved["tools"], "--tools")
    if not 0 < resolved["timeout_s"] <= 600:
        raise SmolGRPOError(f"--tool-timeout-s must be > 0 and <= 600, got {resolved['timeout_s']}")
    if resolved["max_output_chars"] < 1:
        raise SmolGRPOError(
            f"--tool-max-output-chars must be >= 1, got {resolved['max_output_chars']}"
        )
    return resolved


def build_tool_box(tokenizer, resolved: dict):
    """The tools.ToolBox of `tool_fields_from_args`, or None when no tool is on."""
    from smolgrpo.generation.tools import ToolBox

    if not resolved["tools"]:
        return None
    return ToolBox(
        tokenizer, resolved["tools"], resolved["timeout_s"], resolved["max_output_chars"]
    )
