"""The model card's usage snippet, run as written, gives the format `smolgrpo eval` measured.

A tiny model is taught one worked problem with `SFTTrainer` (a few seconds), so that it answers
in the tag format; then the snippet is taken from the card the run wrote into final/README.md,
pointed at that folder and run: it must print exactly the completion that `evaluate` scored as
strict format and correct.
"""

from __future__ import annotations

import contextlib
import io
import json
import re

from conftest import build_char_tokenizer, build_tiny_model

from smolgrpo.config.loading import load_config
from smolgrpo.evaluation.evaluate import evaluate
from smolgrpo.evaluation.settings import EvalSettings
from smolgrpo.tasks.data import Problem
from smolgrpo.tasks.prompts import PromptTemplate
from smolgrpo.training.sft import SFTTrainer

QUESTION = "Tom has 3 boxes of 12 eggs. How many eggs?"  # the question in the card's snippet


def test_usage_snippet_prints_the_measured_format(tmp_path):
    problem = Problem(QUESTION, "3 * 12 = 36\n#### 36", "36", "card")
    config = load_config(
        None,
        [
            f"run.output_dir={tmp_path / 'run'}",
            "prompt.system_prompt=Solve it.",
            "optim.prompts_per_step=1",
            "optim.micro_batch_size=1",
            "optim.learning_rate=1e-2",
            "optim.warmup_steps=0",
            "optim.lr_schedule=constant",
            "optim.max_steps=150",
            "run.save_every=1000",
            "sft.max_length=400",
        ],
    )
    tokenizer = build_char_tokenizer()
    trainer = SFTTrainer(
        config,
        train_problems=[problem],
        overwrite=True,
        show_progress=False,
        model=build_tiny_model(len(tokenizer)),
        tokenizer=tokenizer,
    )
    final = trainer.train()
    template = PromptTemplate(**json.loads((final / "prompt_template.json").read_text()))
    metrics, records = evaluate(
        trainer.model.eval(),
        tokenizer,
        [problem],
        EvalSettings(template=template),
        show_progress=False,
    )
    assert metrics["strict_format_rate"] == 1.0 and metrics["accuracy"] == 1.0
    card = (final / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert QUESTION in code and "path/to/final" in code
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        # The card's own snippet (our text, not model output), run as a user would.
        exec(compile(code.replace("path/to/final", str(final)), "card", "exec"), {})  # noqa: S102
    assert printed.getvalue() == records[0]["completion"] + "\n"
    assert printed.getvalue() == "<reasoning>\n3 * 12 = 36\n</reasoning>\n<answer>\n36\n</answer>\n"
