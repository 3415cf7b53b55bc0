"""Write docs/configuration.md from the config dataclasses: every key, its default, what the
validation allows, and what it means.

    python tools/configuration_doc.py           # rewrite docs/configuration.md
    python tools/configuration_doc.py --check   # exit 1 when the file is out of date

Nothing in the page is typed by hand except the meanings of keys that have no comment in the
code:
- keys, types and defaults are read from the dataclasses (`smolgrpo.config.schema.Config`);
- a key's meaning is the `#` comment beside it or the comment lines just above it, in the
  dataclass's own source; `MEANINGS` below fills in the keys that have none;
- what a key allows is asked of the validation itself: the script loads a config with an
  out-of-range value for that key and quotes the one-line error (`must be ...`, `valid: ...`);
- the rules between keys are the messages that `Config.validate` raises.

`tests/test_docs.py` regenerates the page and fails when it differs from the committed one.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "configuration.md"
LONG_DEFAULT = 60  # characters: longer defaults are printed below their section's table

# Meanings of the keys whose dataclass field carries no comment of its own (or whose comment
# describes several fields at once). A key named here that the config no longer has is an error.
MEANINGS = {
    "model.device": "`auto` (CUDA when available, else CPU), `cpu`, `cuda`, `cuda:1`, ...",
    "model.trust_remote_code": "let transformers run a model repository's own Python code",
    "model.allow_pickle": "accept pickle (`.bin`) weights; off: safetensors only",
    "model.gradient_checkpointing": "recompute activations in the backward pass to save memory",
    "model.lora": "train LoRA adapters instead of all weights (merged into final/)",
    "model.lora_rank": "LoRA: rank of the adapters",
    "model.lora_alpha": "LoRA: scaling numerator (the update is scaled by alpha / rank)",
    "model.lora_dropout": "LoRA: dropout on the adapters' input",
    "data.task": "where the problems come from and how an answer is checked: `gsm8k`, `jsonl`, "
    "`csv`, `hub`, `reasoning_gym` (docs/tasks.md)",
    "data.train_split": "split the training problems are drawn from",
    "data.train_limit": "use only the first N training problems (null: all)",
    "data.eval_split": "split of the periodic and final evaluations",
    "data.question_field": "jsonl/csv/hub: the column holding the question",
    "data.answer_type": "jsonl/csv/hub: how an answer is compared with the gold: `number` "
    "(numeric match), `exact` (after strip, casefold, collapsed spaces), `math` (math-verify)",
    "data.answer_field": "jsonl/csv/hub: the column holding the gold answer",
    "data.gym_dataset": "reasoning_gym: the dataset's name (`countdown`, `gsm_symbolic`, ...)",
    "data.gym_size": "reasoning_gym: problems generated per split",
    "data.gym_seed": "reasoning_gym: seed of the train split (the eval split uses another)",
    "prompt.system_prompt": "the system message of every prompt",
    "prompt.num_few_shot": "worked train-split examples shown before the question",
    "rewards.weights": "reward name (built-in, `module:function` or `file.py:function`) -> "
    "weight; the total reward is the weighted sum. Not given: the task's own defaults (tasks "
    "with text answers: correctness and format only)",
    "sampling.max_completion_length": "new tokens per completion at most",
    "sampling.temperature": "sampling temperature (the log-probs use the same one)",
    "sampling.top_p": "nucleus sampling: keep the smallest set of tokens with this mass",
    "sampling.top_k": "keep the k most likely tokens (0: all)",
    "grpo.loss_type": "how token losses are averaged: `dapo` (over all tokens of the batch), "
    "`bnpo` (the same here), `grpo` (per sequence, then over sequences), `dr_grpo` (over "
    "rows x max_completion_length)",
    "grpo.beta": "weight of the k3 KL penalty to a frozen reference model (0: no reference model)",
    "grpo.scale_rewards": "divide advantages by the group's std (`group`), the batch's "
    "(`batch`) or not at all (`none`, Dr. GRPO)",
    "grpo.epsilon": "lower clip range of the probability ratio",
    "grpo.epsilon_high": "upper clip range (DAPO's clip-higher); null: epsilon",
    "grpo.num_iterations": "optimisation passes over each batch of completions (mu)",
    "grpo.mask_truncated_completions": "give completions cut at the length limit no loss",
    "grpo.max_refill_rounds": "dynamic sampling: rounds of new prompts drawn to replace "
    "groups without signal",
    "optim.learning_rate": "AdamW peak learning rate",
    "optim.weight_decay": "AdamW weight decay",
    "optim.adam_beta1": "AdamW beta1",
    "optim.adam_beta2": "AdamW beta2",
    "optim.warmup_steps": "linear warm-up steps before the schedule",
    "optim.lr_schedule": "the learning rate after warm-up: cosine decay to 0, or constant",
    "optim.max_grad_norm": "gradients are clipped to this global norm",
    "optim.max_steps": "optimizer steps of the run (and the cosine's length)",
    "run.output_dir": "the run folder (refused when it holds another run, unless --overwrite)",
    "run.seed": "seed of sampling, data order and initialisation",
    "run.keep_checkpoints": "how many of the newest checkpoints are kept",
    "run.eval_limit": "problems in each periodic evaluation",
    "run.eval_batch_size": "prompts decoded together in evaluation",
    "run.log_samples_every": "steps between samples/step_N.jsonl files",
}

_PROBE_TEXT = "__not_a_valid_value__"
_ALLOWED_RE = re.compile(r"\((?:must be|valid:) (.*)\)\s*$")


def field_comments(cls) -> dict[str, str]:
    """Each field's comment: the comment lines just above it, then the one beside it."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.add(token.start[0])
    result = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above = []
        line = node.lineno - 1
        while line in comments and line not in code_lines:
            above.insert(0, comments[line])
            line -= 1
        beside = comments.get(node.lineno) if node.lineno in code_lines else None
        text = " ".join(above + ([beside] if beside else []))
        result[node.target.id] = text
    return result


def probe_value(default, annotation: str):
    """A value of the key's type that no sane range allows, or None for keys with no range."""
    if isinstance(default, bool):
        return None
    if isinstance(default, int) or (default is None and "int" in annotation):
        return -(10**9)
    if isinstance(default, float) or (default is None and "float" in annotation):
        return -1.0e9
    if isinstance(default, str) or (default is None and "str" in annotation):
        return _PROBE_TEXT
    if isinstance(default, list):
        return _PROBE_TEXT if "str" in annotation else [_PROBE_TEXT]
    if isinstance(default, dict):
        return {_PROBE_TEXT: 1}
    return None


def allowed_values(section: str, key: str, default, annotation: str) -> str:
    """What the validation allows for `section.key`, quoted from its own error message."""
    from smolgrpo.config.loading import config_from_dict
    from smolgrpo.errors import SmolGRPOError

    value = probe_value(default, annotation)
    if value is None:
        return ""
    try:
        config_from_dict({section: {key: value}})
    except SmolGRPOError as error:
        message = str(error)
        match = _ALLOWED_RE.search(message)
        if match and f"{section}.{key}" in message:
            return match.group(1)
    return ""


def cross_key_rules(config_cls) -> list[str]:
    """The messages `Config.validate` raises: the rules that tie several keys together."""
    method = getattr(config_cls, "validate", None)
    if method is None:
        return []
    tree = ast.parse(textwrap.dedent(inspect.getsource(method)))
    rules = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
            continue
        text = "".join(_literal_text(arg) for arg in node.exc.args[:1])
        if text:
            rules.append(re.sub(r"^config: ", "", text))
    return rules


def _literal_text(node) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            _literal_text(part) if isinstance(part, ast.Constant) else "…" for part in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal_text(node.left) + _literal_text(node.right)
    return ""


def render_default(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, list | dict):
        return json.dumps(value).replace('"', "")
    return repr(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def generate() -> str:
    from smolgrpo.config.schema import Config

    used = set()
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by tools/configuration_doc.py from the config dataclasses; do not edit."
        " Run `python tools/configuration_doc.py` after changing the config. -->",
        "",
        "A recipe is a YAML file with one section per concern; any key can be overridden with",
        "`--set section.key=value` (the value is read as YAML), and one entry of a mapping the",
        "recipe gives with `--set section.key.entry=value` (`--set rewards.weights.xml_count=0.1`",
        "adds to or changes the recipe's weights). Every key is checked when the",
        "config loads: an unknown key, a wrong type or a value outside the allowed range is one",
        "`error:` line naming it. `smolgrpo train --config FILE --print-config` prints the",
        "resolved config, and every run saves it as `config.yaml`.",
        "",
        "Allowed: what the validation accepts, quoted from its own error message (empty: any",
        "value of the type).",
        "",
    ]
    for section_field in dataclasses.fields(Config):
        section = section_field.name
        cls = section_field.default_factory
        instance = cls()
        comments = field_comments(cls)
        lines += [f"## `{section}`", ""]
        doc = inspect.cleandoc(cls.__doc__ or "")
        if doc and not doc.startswith(cls.__name__ + "("):  # not dataclasses' own signature
            lines += [doc.split("\n\n")[0].replace("\n", " "), ""]
        lines += ["| key | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
        long_defaults = []
        for field in dataclasses.fields(cls):
            key = f"{section}.{field.name}"
            default = getattr(instance, field.name)
            annotation = field.type if isinstance(field.type, str) else str(field.type)
            shown = render_default(default)
            if len(shown) > LONG_DEFAULT:
                long_defaults.append((key, default))
                shown_cell = "below"
            else:
                shown_cell = f"`{_cell(shown)}`"
            meaning = MEANINGS.get(key) or comments.get(field.name, "")
            used.add(key)
            if not meaning:
                raise SystemExit(f"{key}: no comment in the dataclass and no entry in MEANINGS")
            allowed = allowed_values(section, field.name, default, annotation)
            lines.append(
                f"| `{field.name}` | `{_cell(annotation)}` | {shown_cell} | "
                f"{_cell(allowed)} | {_cell(meaning)} |"
            )
        lines.append("")
        for key, default in long_defaults:
            text = default if isinstance(default, str) else json.dumps(default, indent=2)
            lines += [f"Default of `{key}`:", "", "```text", text.rstrip("\n"), "```", ""]
    stale = sorted(set(MEANINGS) - used)
    if stale:
        raise SystemExit(f"MEANINGS names keys the config does not have: {', '.join(stale)}")
    rules = cross_key_rules(Config)
    if rules:
        lines += ["## Rules between keys", ""]
        lines += [f"- {rule}" for rule in rules]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    text = generate()
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(
                f"{OUTPUT.relative_to(ROOT)} is out of date: run python tools/configuration_doc.py"
            )
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
