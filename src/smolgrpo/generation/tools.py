"""Tools the model calls while it writes: the calculator and your own functions, one interface.

A named tool is called by writing `name(arguments) =` in the completion (`lookup(Paris) =`,
`convert(3 mi to km) =`): after the token that writes that "=", the sampler writes the tool's
result as the next tokens (" 4.828", spaced as the call is) instead of sampling them. The
calculator keeps its own short form, `expression =` (calculator.py), and is one tool here.
As with the calculator, the written tokens are not the policy's samples: they are marked in
`Rollout.forced_mask` and left out of the loss.

A tool is `function(arguments: str) -> str`: it gets the text between the parentheses as a
plain string (never evaluated) and returns the text to write (anything else is written as its
`str()`). It is the user's own Python, loaded as a reward plug-in is (config/tools.py). Each
call runs in a worker thread that the decode loop waits on for at most `timeout_s`; a call that
raises or is still running then is answered with an error text (`error: KeyError: 'x'`,
`error: timed out after 5s`) and the run goes on. Python cannot stop a thread, so a timed-out
call keeps running in the background until it returns: a tool that can hang should time out
on its own. Results (errors too) are cut to `max_output_chars` characters.

Calls and errors are counted per tool (`ToolBox.take_counts`; training logs them per step as
`tools/calls/<name>`, `tools/errors/<name>`).
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable

from smolgrpo.config.tools import BUILTIN_TOOLS, check_tool_specs, tool_name
from smolgrpo.generation.calculator import TAIL_TOKENS, Calculator, equals_token_ids
from smolgrpo.rewards.plugins import load_plugin

NAMED_TAIL_TOKENS = 64  # how far back a named call's "name(" is looked for


def find_call(text: str, names) -> tuple[str, str] | None:
    """(name, arguments) when `text` ends in `name(arguments) =` for one of `names`, else None.

    The call is the last `name(` on the text's last line; its arguments run to the ")" before
    the "=", so they may hold parentheses themselves."""
    stripped = text.rstrip()
    if not stripped.endswith("="):
        return None
    before = stripped[:-1].rstrip()
    if not before.endswith(")"):
        return None
    line = before.rpartition("\n")[2]
    pattern = r"(?<![\w.])(" + "|".join(re.escape(name) for name in names) + r")\("
    calls = list(re.finditer(pattern, line))
    if not calls:
        return None
    last = calls[-1]
    return last.group(1), line[last.end() : -1]


def call_tool(
    function: Callable, arguments: str, timeout_s: float, max_output_chars: int
) -> tuple[str, bool]:
    """(the text to write, whether the call failed): the result, or an error text when the
    function raised or was still running after `timeout_s`; cut to `max_output_chars`."""
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["value"] = function(arguments)
        except BaseException as error:  # noqa: BLE001 - the model sees it (SystemExit too)
            outcome["error"] = error

    worker = threading.Thread(target=work, name="smolgrpo-tool", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        text, failed = f"error: timed out after {timeout_s:g}s", True
    elif "error" in outcome:
        error = outcome["error"]
        detail = " ".join(str(error).split())
        name = type(error).__name__
        text, failed = f"error: {name}: {detail}" if detail else f"error: {name}", True
    else:
        value = outcome.get("value")
        text, failed = value if isinstance(value, str) else str(value), False
    return text[:max_output_chars], failed


class ToolBox:
    """The tools of `specs` behind the calculator's interface (`trigger_ids`, `tail_tokens`,
    `result_tokens`), so the decode loop calls them where it called the calculator."""

    def __init__(
        self, tokenizer, specs: list[str], timeout_s: float = 5.0, max_output_chars: int = 200
    ):
        check_tool_specs(specs, "tools")
        self.tokenizer, self.specs = tokenizer, list(specs)
        self.timeout_s, self.max_output_chars = timeout_s, max_output_chars
        self.calculator = Calculator(tokenizer) if "calculator" in specs else None
        self.functions = {
            tool_name(spec): load_plugin(spec, "tools", "tool")
            for spec in specs
            if spec not in BUILTIN_TOOLS
        }
        self.trigger_ids = (
            self.calculator.trigger_ids if self.calculator else equals_token_ids(tokenizer)
        )
        self.tail_tokens = NAMED_TAIL_TOKENS if self.functions else TAIL_TOKENS
        self.calls: Counter = Counter()
        self.errors: Counter = Counter()

    @property
    def names(self) -> list[str]:
        return [tool_name(spec) for spec in self.specs]

    def result_tokens(self, tail_ids: list[int]) -> list[int]:
        """Token ids to write after the tail's last token ("="): a named tool's result when
        the tail ends in `name(arguments) =`, else the calculator's (or none)."""
        if self.functions:
            text = self.tokenizer.decode(tail_ids, skip_special_tokens=True)
            call = find_call(text, self.functions)
            if call is not None:
                name, arguments = call
                result, failed = call_tool(
                    self.functions[name], arguments, self.timeout_s, self.max_output_chars
                )
                self.calls[name] += 1
                self.errors[name] += failed
                return self.tokenizer.encode(_spaced(text, result), add_special_tokens=False)
        if self.calculator is None:
            return []
        # The calculator sees the tail it always saw, whatever the named tools need.
        ids = self.calculator.result_tokens(tail_ids[-(TAIL_TOKENS + 1) :])
        self.calls["calculator"] += bool(ids)
        return ids

    def take_counts(self) -> dict[str, dict[str, int]]:
        """{"calls": {name: n}, "errors": {name: n}} since the last take, every tool named."""
        counts = {
            "calls": {name: self.calls[name] for name in self.names},
            "errors": {name: self.errors[name] for name in self.names},
        }
        self.calls.clear()
        self.errors.clear()
        return counts


def _spaced(text: str, result: str) -> str:
    """The result spaced as the call is, like the calculator's: "f(x) =" gets " result",
    "f(x)=" and "f(x) = " get "result"."""
    before_equals = text.rstrip()[:-1]
    if text == text.rstrip() and before_equals != before_equals.rstrip():
        return " " + result
    return result


def build_tools(tokenizer, sampling) -> ToolBox | None:
    """The ToolBox a `SamplingConfig` asks for, or None when no tool is on."""
    specs = sampling.tool_specs()
    if not specs:
        return None
    return ToolBox(tokenizer, specs, sampling.tool_timeout_s, sampling.tool_max_output_chars)
