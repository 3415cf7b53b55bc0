"""Prompt rendering: system prompt, prefill, few-shot examples, template fallback, saving."""

from __future__ import annotations

import json

from smolgrpo.rewards.answers import extract_answer
from smolgrpo.rewards.builtin import strict_format_reward
from smolgrpo.tasks.data import Problem
from smolgrpo.tasks.prompts import (
    DEFAULT_PREFILL,
    PLAIN_TEMPLATE,
    SYSTEM_PROMPT,
    PromptTemplate,
    build_messages,
    ensure_chat_template,
    format_reference_response,
    render_prompt,
    select_few_shot,
)

NATALIA = Problem(
    question="Natalia sold clips to 48 of her friends in April, and then she sold half as many "
    "clips in May. How many clips did Natalia sell altogether in April and May?",
    solution="Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
    gold="72",
    origin="train.jsonl:1",
)
WENG = Problem(
    question="Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
    "babysitting. How much did she earn?",
    solution="Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
    "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10",
    gold="10",
    origin="train.jsonl:2",
)


def test_render_prompt_structure(char_tokenizer):
    prompt = render_prompt(char_tokenizer, "What is 2+2?", PromptTemplate())
    assert prompt.endswith("<|im_start|>assistant\n" + DEFAULT_PREFILL)
    assert prompt.startswith("<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n")
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>\n" in prompt
    assert prompt.index(SYSTEM_PROMPT) < prompt.index("What is 2+2?")


def test_render_prompt_custom_template(char_tokenizer):
    template = PromptTemplate(system_prompt="Be brief.", prefill="Answer:")
    prompt = render_prompt(char_tokenizer, "Q?", template)
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n"
        "<|im_start|>assistant\nAnswer:"
    )


def test_render_prompt_empty_prefill(char_tokenizer):
    prompt = render_prompt(char_tokenizer, "Q?", PromptTemplate(prefill=""))
    assert prompt.endswith("<|im_start|>assistant\n")


def test_format_reference_response_strips_calculator_annotations():
    response = format_reference_response(NATALIA)
    assert response == (
        "<reasoning>\n"
        "Natalia sold 48/2 = 24 clips in May.\n"
        "Natalia sold 48+24 = 72 clips altogether in April and May.\n"
        "</reasoning>\n<answer>\n72\n</answer>"
    )
    assert "<<" not in response and "####" not in response
    # a few-shot example is itself a perfect response under the rewards
    assert extract_answer(response) == "72"
    assert strict_format_reward([response], ["72"]) == [1.0]


def test_few_shot_examples_come_before_the_question(char_tokenizer):
    prompt = render_prompt(char_tokenizer, "What is 2+2?", PromptTemplate(), [NATALIA, WENG])
    natalia_at = prompt.index(NATALIA.question)
    weng_at = prompt.index(WENG.question)
    question_at = prompt.index("What is 2+2?")
    assert prompt.index(SYSTEM_PROMPT) < natalia_at < weng_at < question_at
    example = format_reference_response(NATALIA)
    assert f"<|im_start|>assistant\n{example}<|im_end|>" in prompt
    assert prompt.index(example) < weng_at
    assert "<<48/2=24>>" not in prompt and "<<12/60=0.2>>" not in prompt
    assert "\n10\n</answer>" in prompt
    assert prompt.endswith(DEFAULT_PREFILL)


def test_build_messages_roles():
    messages = build_messages("Q?", PromptTemplate(), [NATALIA])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == NATALIA.question
    assert messages[-1] == {"role": "user", "content": "Q?"}


def test_select_few_shot_deterministic_and_from_the_list():
    pool = [
        Problem(question=f"q{i}", solution=f"#### {i}", gold=str(i), origin=f"t:{i}")
        for i in range(50)
    ]
    first = select_few_shot(pool, 4, seed=0)
    assert first == select_few_shot(pool, 4, seed=0)
    assert len(first) == 4 and len(set(first)) == 4
    assert all(p in pool for p in first)
    assert select_few_shot(pool, 4, seed=1) != first
    assert select_few_shot(pool, 0) == []
    assert select_few_shot(pool, -1) == []
    assert sorted(select_few_shot(pool[:3], 10), key=lambda p: p.gold) == pool[:3]


def test_tokenizer_without_chat_template_gets_plain_template(char_tokenizer, capsys):
    char_tokenizer.chat_template = None
    prompt = render_prompt(char_tokenizer, "Q?", PromptTemplate(system_prompt="S", prefill="P"))
    assert prompt == "system: S\nuser: Q?\nassistant: P"
    assert char_tokenizer.chat_template == PLAIN_TEMPLATE
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "chat template" in err
    assert err.count("\n") == 1
    # the template is installed once: no second warning
    render_prompt(char_tokenizer, "Q2?", PromptTemplate())
    assert capsys.readouterr().err == ""


def test_ensure_chat_template_keeps_an_existing_template(char_tokenizer, capsys):
    original = char_tokenizer.chat_template
    ensure_chat_template(char_tokenizer)
    assert char_tokenizer.chat_template == original
    assert capsys.readouterr().err == ""


def test_prompt_template_save_round_trips(tmp_path):
    template = PromptTemplate(system_prompt='Sys \u00e9\n"quoted"', prefill="<r>\n", num_few_shot=3)
    path = tmp_path / "prompt_template.json"
    template.save(path)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved == {"system_prompt": 'Sys \u00e9\n"quoted"', "prefill": "<r>\n", "num_few_shot": 3}
    assert PromptTemplate(**saved) == template
    assert PromptTemplate() == PromptTemplate(
        system_prompt=SYSTEM_PROMPT, prefill=DEFAULT_PREFILL, num_few_shot=0
    )
