"""Local paths in published files: the model card, `task.json` and `eval_results.json` that
`smolgrpo push` uploads name no absolute local path (a home folder, a user name, a mount).

A path is shown relative to the run when it lies inside it (`final`), as `NAME/final` for
another run's final model (an SFT warm start), and otherwise by its name (`gsm8k`, `qa.jsonl`,
`my_rewards.py`). What is known to be a path (`model.name`, `data.source`, reward plug-in
files, `$SMOLGRPO_DATA_DIR`) is replaced wherever it appears; any other absolute path left
inside backticks is shortened the same way.
"""

from __future__ import annotations

import re
from pathlib import Path

# An absolute path (or ~/...) inside backticks: what the card quotes as a path.
_QUOTED_ABSOLUTE = re.compile(r"`((?:/|~/|[A-Za-z]:[\\/])[^`\n]*)`")


def looks_local(text) -> bool:
    """Whether a config value names a local file or folder (not a hub id or 'embedded')."""
    if not isinstance(text, str) or not text or text == "embedded":
        return False
    if text.startswith(("/", "~", ".")) or re.match(r"[A-Za-z]:[\\/]", text):
        return True
    try:
        return Path(text).expanduser().exists()
    except OSError:
        return False


def public_path(text: str, run_dir: Path | str | None = None) -> str:
    """How a published file shows a local path (see the module docstring)."""
    path = Path(text).expanduser()
    try:
        absolute = path.resolve()
    except (OSError, RuntimeError):
        return path.name or "."
    if run_dir is not None:
        run = Path(run_dir).resolve()
        if absolute == run or run in absolute.parents:
            return absolute.relative_to(run).as_posix() or "."
    if absolute.name == "final" and absolute.parent.name:
        return f"{absolute.parent.name}/final"
    return absolute.name or "."


def config_paths(config: dict) -> list[str]:
    """The local paths a saved config names: model, data source (as given and as resolved from
    $SMOLGRPO_DATA_DIR) and reward and tool plug-in files."""
    from smolgrpo.tasks import saved_task_kind

    model, data = config.get("model") or {}, config.get("data") or {}
    found = [model.get("name"), data.get("source"), saved_task_kind(data).local_source(data)]
    tools = (config.get("sampling") or {}).get("tools") or []
    for name in [*((config.get("rewards") or {}).get("weights") or {}).keys(), *tools]:
        if isinstance(name, str) and ":" in name:
            found.append(name.rsplit(":", 1)[0])
    return [text for text in found if looks_local(text)]


def scrub_text(text: str, paths: list[str], run_dir: Path | str | None = None) -> str:
    """`text` with each of `paths` (and any other quoted absolute path) in its public form."""
    variants: dict[str, str] = {}
    for original in paths:
        shown = public_path(original, run_dir)
        for form in {original, str(Path(original).expanduser())}:
            # A bare name ("data") is already a file name, and replacing it in prose would
            # change words: only paths with a separator are replaced.
            if ("/" in form or "\\" in form) and form != shown:
                variants[form] = shown
    for form in sorted(variants, key=len, reverse=True):  # a longer path before its prefix
        text = text.replace(form, variants[form])
    return _QUOTED_ABSOLUTE.sub(lambda m: f"`{public_path(m.group(1), run_dir)}`", text)


def public_task_fields(fields: dict, run_dir: Path | str | None = None) -> dict:
    """A `task.json` mapping with its data source in public form."""
    source = fields.get("source")
    if looks_local(source):
        fields = {**fields, "source": public_path(source, run_dir)}
    return fields


def public_tool_fields(fields: dict, run_dir: Path | str | None = None) -> dict:
    """A `tools.json` mapping with each tool file in public form (`my_tools.py:lookup`)."""
    tools = []
    for name in fields.get("tools") or []:
        module_part, _, function = name.rpartition(":") if isinstance(name, str) else ("", "", "")
        if module_part and looks_local(module_part):
            name = f"{public_path(module_part, run_dir)}:{function}"
        tools.append(name)
    return {**fields, "tools": tools}


def public_eval_metrics(metrics: dict, run_dir: Path | str | None = None) -> dict:
    """An eval's `metrics.json` with its model path (and paths in its task title) public."""
    public = {}
    for key, value in metrics.items():
        if key == "model" and looks_local(value):
            value = public_path(value, run_dir)
        elif isinstance(value, str):
            value = scrub_text(value, [], run_dir)
        public[key] = value
    return public
