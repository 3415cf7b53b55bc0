"""Chat prompts: the one place where the system prompt, the prefill and few-shot examples live.

Cold start: SmolLM2-135M-Instruct never writes `<reasoning>`/`<answer>` tags on its own, so a
reward built on them would be zero for every sample and GRPO would have nothing to learn from.
The default template therefore *prefills* the assistant turn with `<reasoning>\\n`: the model
starts inside the reasoning block and often closes it and opens `<answer>` itself. Rewards always
score `prefill + generated text`, so a completion is judged as the full response a user sees.
Few-shot examples come from the train split only. The library default is none (each example adds
about 200 prompt tokens), but the training recipes use one: measured on CPU, prefill alone taught
the model to open `<answer>` yet never to close `</reasoning>` (strict format stayed at 0 over 45
steps), while prefill plus one worked example took strict format from 0 to ~40% in 13 steps.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from smolgrpo.errors import SmolGRPOError, warn
from smolgrpo.tasks.data import Problem

SYSTEM_PROMPT = (
    "You are a careful math tutor. Solve the problem step by step.\n"
    "Respond in exactly this format:\n"
    "<reasoning>\n...your step-by-step reasoning...\n</reasoning>\n"
    "<answer>\n...the final number only...\n</answer>"
)
DEFAULT_PREFILL = "<reasoning>\n"
# Saved beside every run, eval and trained model, so a model is evaluated with its own prompt.
PROMPT_TEMPLATE_FILE = "prompt_template.json"
# Used only for a tokenizer that has no chat template of its own.
PLAIN_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"

_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")


@dataclass(frozen=True)
class PromptTemplate:
    system_prompt: str = SYSTEM_PROMPT
    prefill: str = DEFAULT_PREFILL
    num_few_shot: int = 0

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


def load_prompt_template(path: Path) -> PromptTemplate:
    """A saved `prompt_template.json`; a file that is not a JSON object of these three keys
    with their types (strings, a count >= 0) is one line naming the file and the key."""
    try:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise SmolGRPOError(f"{path}: unreadable prompt template ({error})") from None
    if not isinstance(saved, dict):
        raise SmolGRPOError(f"{path}: unreadable prompt template (not a JSON object)")
    types = {"system_prompt": str, "prefill": str, "num_few_shot": int}
    for key, value in saved.items():
        if key not in types:
            raise SmolGRPOError(
                f"{path}: unknown key '{key}' in the prompt template (valid: {', '.join(types)})"
            )
        wrong = not isinstance(value, types[key]) or isinstance(value, bool)
        if wrong or (key == "num_few_shot" and value < 0):
            wanted = "a count >= 0" if key == "num_few_shot" else "a string"
            raise SmolGRPOError(f"{path}: '{key}' should be {wanted}, got {value!r}")
    return PromptTemplate(**saved)


def format_reference_response(problem: Problem) -> str:
    """A GSM8K reference solution rewritten in our response format (for few-shot examples).

    Other tasks (tasks/) keep only the bare answer as the solution, no reasoning to show, unless
    a file task names `data.solution_field`: its steps then come in GSM8K's `steps #### answer`."""
    if "####" not in problem.solution:
        return f"<reasoning>\n</reasoning>\n<answer>\n{problem.solution}\n</answer>"
    reasoning = problem.solution.rsplit("####", 1)[0]
    reasoning = _CALCULATOR_ANNOTATION.sub("", reasoning).strip()
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{problem.gold}\n</answer>"


def select_few_shot(
    train_problems: list[Problem], num_few_shot: int, seed: int = 0
) -> list[Problem]:
    """Fixed examples from the train split (the caller must never pass test problems)."""
    if num_few_shot <= 0:
        return []
    return random.Random(seed).sample(train_problems, min(num_few_shot, len(train_problems)))


def build_messages(question: str, template: PromptTemplate, few_shot: list[Problem]) -> list[dict]:
    messages = [{"role": "system", "content": template.system_prompt}]
    for example in few_shot:
        messages.append({"role": "user", "content": example.question})
        messages.append({"role": "assistant", "content": format_reference_response(example)})
    messages.append({"role": "user", "content": question})
    return messages


def ensure_chat_template(tokenizer) -> None:
    """Give a template-less tokenizer a plain one, with a warning, instead of failing."""
    if not getattr(tokenizer, "chat_template", None):
        warn("tokenizer has no chat template; using a plain 'role: content' template")
        tokenizer.chat_template = PLAIN_TEMPLATE


def render_prompt(
    tokenizer, question: str, template: PromptTemplate, few_shot: list[Problem] | None = None
) -> str:
    """The prompt text the model continues: chat template + generation prompt + prefill."""
    ensure_chat_template(tokenizer)
    messages = build_messages(question, template, few_shot or [])
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + template.prefill
