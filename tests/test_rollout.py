"""Our decode loop against Hugging Face `generate`, and the shared-prompt log-probs against the
full forward (values and gradients)."""

from __future__ import annotations

import pytest
import torch

from smolgrpo.generation.rollout import (
    DecodeSettings,
    decode,
    encode_prompts,
    eos_token_ids,
    generate,
    sample_next_tokens,
)
from smolgrpo.models.loading import prepare_tokenizer
from smolgrpo.training.log_probs import completion_log_probs, prompt_groups

PROMPTS = ["What is 2 + 3?", "Tom has 12 apples and eats 5. How many are left?", "Hi"]


def _generate_hf(tokenizer_model, tokenizer, ids, mask, eos, max_new_tokens):
    """The reference: Hugging Face greedy `generate`, completion ids only."""
    output = tokenizer_model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos,
    )
    return output[:, ids.shape[1] :]


@pytest.mark.parametrize("num_generations", [1, 3])
def test_greedy_decode_matches_hf_generate(tiny_model, char_tokenizer, num_generations):
    prepare_tokenizer(char_tokenizer)
    ids, mask = encode_prompts(char_tokenizer, PROMPTS)
    eos = eos_token_ids(tiny_model, char_tokenizer)
    tiny_model.eval()
    settings = DecodeSettings(pad_token_id=0, num_generations=num_generations, max_new_tokens=24)
    ours = decode(tiny_model, ids, mask, eos, settings).ids
    theirs = _generate_hf(  # generate() refuses greedy num_return_sequences: repeat the rows
        tiny_model,
        char_tokenizer,
        ids.repeat_interleave(num_generations, 0),
        mask.repeat_interleave(num_generations, 0),
        eos,
        24,
    )
    assert ours.shape[0] == len(PROMPTS) * num_generations
    width = min(ours.shape[1], theirs.shape[1])
    assert torch.equal(ours[:, :width], theirs[:, :width])


def test_decode_stops_rows_at_eos_and_pads_after(tiny_model, char_tokenizer):
    """Make EOS the most likely token after two steps for one prompt only: that row must end
    with EOS then pads, and the others keep going to the budget."""
    prepare_tokenizer(char_tokenizer)
    ids, mask = encode_prompts(char_tokenizer, PROMPTS)
    calls = {"n": 0}
    original = tiny_model.forward

    def forward(*args, **kwargs):
        output = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # third forward predicts the third token: row 0 emits EOS
            output.logits[0, -1, 2] = 1e4
        return output

    tiny_model.forward = forward
    settings = DecodeSettings(pad_token_id=0, max_new_tokens=10)
    out = decode(tiny_model.eval(), ids, mask, [2], settings).ids
    assert out.shape == (3, 10)
    assert out[0, 2] == 2 and (out[0, 3:] == 0).all()
    assert (out[1:, :] != 0).all()


def test_ignore_eos_always_fills_the_budget(tiny_model, char_tokenizer):
    prepare_tokenizer(char_tokenizer)
    tiny_model.lm_head.bias = None
    with torch.no_grad():  # make EOS overwhelmingly likely: it must still never be sampled
        tiny_model.lm_head.weight[2] = tiny_model.lm_head.weight[2] * 0 + 5.0
    torch.manual_seed(0)
    rollout = generate(
        tiny_model,
        char_tokenizer,
        PROMPTS[:2],
        num_generations=2,
        max_new_tokens=12,
        temperature=1.0,
        ignore_eos=True,
    )
    assert rollout.completion_ids.shape == (4, 12)
    assert not (rollout.completion_ids == 2).any()
    assert rollout.truncated.all()


def test_sample_next_tokens_top_k_and_top_p():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(2000, 1)
    torch.manual_seed(0)
    assert set(sample_next_tokens(logits, 1.0, top_k=2).tolist()) == {2, 3}
    # softmax([0,1,2,3]) = [.032, .087, .237, .644]: top_p 0.7 keeps tokens 3 and 2 only
    assert set(sample_next_tokens(logits, 1.0, top_p=0.7).tolist()) == {2, 3}
    assert set(sample_next_tokens(logits, 1.0, top_p=0.5).tolist()) == {3}
    assert sample_next_tokens(logits[:1], 0.0).item() == 3
    # plain sampling follows the softmax: token 3 about 64% of the time
    share = (sample_next_tokens(logits, 1.0) == 3).float().mean().item()
    assert 0.6 < share < 0.69


def test_prompt_groups_finds_runs_of_identical_prompts():
    ids = torch.tensor([[0, 5, 6], [0, 5, 6], [4, 5, 6], [4, 5, 6], [4, 5, 6], [0, 5, 6]])
    mask = (ids != 0).long()
    first, row_to_prompt = prompt_groups(ids, mask)
    assert first.tolist() == [0, 2, 5]
    assert row_to_prompt.tolist() == [0, 0, 1, 1, 1, 2]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_shared_prompt_log_probs_and_gradients_match_full_forward(
    tiny_model, char_tokenizer, temperature
):
    prepare_tokenizer(char_tokenizer)
    G = 3
    ids, mask = encode_prompts(char_tokenizer, PROMPTS)
    ids, mask = ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)  # (9, P)
    torch.manual_seed(1)
    completions = torch.randint(4, 90, (ids.shape[0], 7))  # (9, 7)
    weights = torch.randn(ids.shape[0], 7)
    results = []
    for share in (False, True):
        tiny_model.zero_grad()
        log_probs, entropy = completion_log_probs(
            tiny_model.train(),
            ids,
            mask,
            completions,
            temperature=temperature,
            return_entropy=True,
            share_prompt=share,
        )
        (log_probs * weights).sum().backward()
        grads = [p.grad.clone() for p in tiny_model.parameters()]
        results.append((log_probs.detach(), entropy, grads))
    (full, full_entropy, full_grads), (shared, shared_entropy, shared_grads) = results
    assert full.shape == (9, 7)
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared_entropy, full_entropy, atol=1e-5, rtol=1e-5)
    for a, b in zip(shared_grads, full_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # and the rows of one prompt really are scored against that prompt, not a neighbour's
    assert not torch.allclose(full[0], full[G])


def test_shared_prompt_single_completion_token(tiny_model, char_tokenizer):
    prepare_tokenizer(char_tokenizer)
    ids, mask = encode_prompts(char_tokenizer, PROMPTS[:2])
    completions = torch.tensor([[7], [9]])
    full = completion_log_probs(tiny_model, ids, mask, completions, share_prompt=False)
    shared = completion_log_probs(tiny_model, ids, mask, completions)
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=1e-5)
