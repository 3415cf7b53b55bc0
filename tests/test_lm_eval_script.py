"""benchmarks/lm_eval_gsm8k.py: the task file it writes for lm-eval (lm-eval itself not needed)."""

from __future__ import annotations

import re

import yaml
from conftest import load_benchmark

from smolgrpo.rewards.answers import extract_answer


def test_task_file_scores_the_answer_tag_with_the_training_prompt(tmp_path):
    script = load_benchmark("lm_eval_gsm8k")
    task = yaml.safe_load(script.task_yaml(tmp_path / "test.jsonl", "<reasoning>\n", 256))
    assert task["dataset_kwargs"]["data_files"]["test"] == str(tmp_path / "test.jsonl")
    assert task["gen_prefix"] == "<reasoning>\n" and task["num_fewshot"] == 0
    assert task["generation_kwargs"]["max_gen_toks"] == 256
    assert task["generation_kwargs"]["do_sample"] is False
    pattern = task["filter_list"][0]["filter"][0]["regex_pattern"]
    cases = {
        "<reasoning>\nx\n</reasoning>\n<answer>\n72\n</answer>": "72",
        "<answer> $1,000 </answer>": "1,000",
        "<answer>\n-3.5\n</answer>": "-3.5",
        "<answer>\nseventy\n</answer>": None,
    }
    for text, expected in cases.items():
        match = re.search(pattern, text)
        assert (match.group(1) if match else None) == expected, text
        # the same number smolgrpo's own extractor reads (up to its normalisation)
        if expected:
            assert extract_answer(text).replace("$", "").strip() == expected.replace("$", "")
