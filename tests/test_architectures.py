"""Architectures beyond Llama (Qwen2, Phi-3, Gemma), tiny and random: our decode loop against
Hugging Face `generate`, the shared-prompt log-probs against the full forward, LoRA targets
found automatically, two training steps, and the fallback when the fast path is unavailable."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_ARCHITECTURES, build_char_tokenizer, build_tiny_architecture
from test_trainer import make_config, problems

from smolgrpo.config.loading import load_config
from smolgrpo.errors import SmolGRPOError
from smolgrpo.generation.rollout import DecodeSettings, decode, encode_prompts, eos_token_ids
from smolgrpo.models import loading as modeling
from smolgrpo.models.architectures import linear_layer_names, lora_target_modules
from smolgrpo.models.loading import prepare_tokenizer
from smolgrpo.runs.metrics_log import read_metrics
from smolgrpo.training.log_probs import completion_log_probs
from smolgrpo.training.trainer import Trainer

PROMPTS = ["What is 2 + 3?", "Tom has 12 apples and eats 5. How many are left?", "Hi"]
ARCHITECTURES = list(TINY_ARCHITECTURES)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture
def tokenizer():
    tokenizer = build_char_tokenizer()
    prepare_tokenizer(tokenizer)
    return tokenizer


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_greedy_decode_matches_hf_generate(architecture, tokenizer):
    model = build_tiny_architecture(architecture, len(tokenizer)).eval()
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    eos = eos_token_ids(model, tokenizer)
    settings = DecodeSettings(pad_token_id=0, num_generations=2, max_new_tokens=16)
    ours = decode(model, ids, mask, eos, settings).ids
    theirs = model.generate(
        input_ids=ids.repeat_interleave(2, 0),
        attention_mask=mask.repeat_interleave(2, 0),
        max_new_tokens=16,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=0,
        eos_token_id=eos,
    )[:, ids.shape[1] :]
    width = min(ours.shape[1], theirs.shape[1])
    assert ours.shape[0] == 6 and torch.equal(ours[:, :width], theirs[:, :width])


def _log_probs_and_grads(model, ids, mask, completions, weights, share: bool):
    model.zero_grad()
    values = completion_log_probs(model.train(), ids, mask, completions, share_prompt=share)
    (values * weights).sum().backward()
    return values.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_shared_prompt_log_probs_match_full_forward(architecture, tokenizer):
    model = build_tiny_architecture(architecture, len(tokenizer))
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    ids, mask = ids.repeat_interleave(3, 0), mask.repeat_interleave(3, 0)  # (9, P)
    torch.manual_seed(1)
    completions = torch.randint(4, 90, (ids.shape[0], 6))  # (9, 6)
    weights = torch.randn(ids.shape[0], 6)
    full, full_grads = _log_probs_and_grads(model, ids, mask, completions, weights, False)
    shared, shared_grads = _log_probs_and_grads(model, ids, mask, completions, weights, True)
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=1e-5)
    assert len(shared_grads) == len(full_grads) > 0
    for a, b in zip(shared_grads, full_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(full[0], full[3])


def test_fast_path_unavailable_falls_back_with_one_warning(tokenizer, monkeypatch, capsys):
    model = build_tiny_architecture("qwen2", len(tokenizer))
    ids, mask = encode_prompts(tokenizer, PROMPTS[:2])
    completions = torch.randint(4, 90, (2, 5))
    full = completion_log_probs(model, ids, mask, completions, share_prompt=False)

    def no_cache(output):
        raise AttributeError("this cache cannot be indexed")

    monkeypatch.setattr(modeling, "returned_cache", no_cache)  # read by forward_after_prefix
    for _ in range(2):
        torch.testing.assert_close(completion_log_probs(model, ids, mask, completions), full)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "warning: Qwen2ForCausalLM: shared-prompt log-probs unavailable (AttributeError); "
        "using the full forward"
    ]


def test_lora_targets_found_automatically(tokenizer):
    phi3 = build_tiny_architecture("phi3", len(tokenizer))
    assert lora_target_modules(phi3, "auto") == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    llama = build_tiny_architecture("llama", len(tokenizer))
    assert linear_layer_names(llama) == sorted(load_config(None).model.lora_target_modules)
    with pytest.raises(SmolGRPOError, match="none of \\['q_proj', 'v_proj'\\].*qkv_proj"):
        lora_target_modules(phi3, ["q_proj", "v_proj"])


@pytest.mark.parametrize("architecture", ["qwen2", "phi3", "gemma"])
def test_two_steps_with_auto_lora(architecture, tokenizer, tmp_path):
    reward_file = tmp_path / "toy_reward.py"  # varied from the first step, unlike correctness
    reward_file.write_text(
        "def odd_characters(completions, answers, **fields):\n"
        "    return [sum(ord(c) % 2 for c in t) / max(len(t), 1) for t in completions]\n"
    )
    config = make_config(
        tmp_path,
        "optim.max_steps=2",
        "model.lora=true",
        "model.lora_target_modules=auto",
        f"rewards.weights={{'{reward_file}:odd_characters': 1.0}}",
    )
    trainer = Trainer(
        config,
        overwrite=True,
        show_progress=False,
        model=build_tiny_architecture(architecture, len(tokenizer)),
        tokenizer=tokenizer,
        train_problems=problems(4),
    )
    # ...q_proj.lora_A.default.weight: every linear layer but the head has an adapter
    parameters = trainer.model.named_parameters()
    adapted = {name.split(".")[-4] for name, _ in parameters if "lora_A" in name}
    expected = linear_layer_names(build_tiny_architecture(architecture, len(tokenizer)))
    assert adapted == set(expected) and "lm_head" not in adapted
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    final = trainer.train()
    rows = read_metrics(tmp_path / "run/metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in rows)
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)  # the adapters moved
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(final)
    assert type(reloaded).__name__ == TINY_ARCHITECTURES[architecture][1]
