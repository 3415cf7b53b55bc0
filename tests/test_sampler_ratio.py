"""Truncated importance sampling against the sampler: the decode loops record the log-prob of
each drawn token under the distribution it was drawn from, the loss weights each token by
min(exp(old - sampler), cap), and every step logs the ratio (sampler/* in metrics.jsonl)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model

import smolgrpo.generation.rollout as rollout
from smolgrpo.algo.log_probs import completion_mask_from_ids, per_token_log_probs
from smolgrpo.algo.loss import grpo_loss, sampler_ratio
from smolgrpo.config.loading import load_config
from smolgrpo.errors import SmolGRPOError
from smolgrpo.generation.calculator import Calculator
from smolgrpo.generation.rollout import DecodeSettings, Rollout, decode, encode_prompts
from smolgrpo.generation.sampler_log_probs import sample_with_log_probs
from smolgrpo.runs.metrics_log import read_metrics
from smolgrpo.tasks.data import Problem
from smolgrpo.training.batching import build_group_batch
from smolgrpo.training.guided_groups import add_reference_rows
from smolgrpo.training.sampler_metrics import SamplerRatioStats
from smolgrpo.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
NAN = float("nan")


# ----------------------------------------------------------------------------- the loss
def _tokens(old_ratio_to_sampler, shift=(0.0, 0.0, 0.0)):
    """(log_probs with grad, old, sampler) for 3 tokens: exp(old - sampler) as given (NaN: no
    sampler log-prob), log_probs = old + shift."""
    old = torch.log(torch.tensor([[0.4, 0.2, 0.5]]))  # (1, 3)
    ratios = torch.tensor([old_ratio_to_sampler])  # (1, 3)
    sampler = old - torch.log(ratios)  # NaN stays NaN
    log_probs = (old + torch.tensor([shift])).requires_grad_(True)
    return log_probs, old, sampler


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_on_policy_loss_weights_each_token_by_the_truncated_ratio(level):
    # ratios 5 (above the cap 2: weight 2), 0.5 (below: weight 0.5), none (weight 1)
    log_probs, _, sampler = _tokens([5.0, 0.5, NAN])
    output = grpo_loss(
        log_probs,
        None,  # on-policy: rho = 1, old = log_probs.detach()
        torch.tensor([1.0]),
        torch.ones(1, 3),
        importance_sampling_level=level,
        sampler_log_probs=sampler,
        sampler_ratio_cap=2.0,
    )
    # dapo: -sum(w * rho * A) / 3 tokens; d/d logp_t = -w_t * A / 3 (rho = 1, d rho = rho)
    assert output.loss.item() == pytest.approx(-(2.0 + 0.5 + 1.0) / 3, rel=1e-6)
    output.loss.backward()
    expected = torch.tensor([[-2.0 / 3, -0.5 / 3, -1.0 / 3]])
    assert torch.allclose(log_probs.grad, expected, atol=1e-6)
    ratio = output.sampler_ratio
    assert ratio[0, :2].tolist() == pytest.approx([5.0, 0.5], rel=1e-5)
    assert math.isnan(ratio[0, 2])


def test_the_weight_uses_the_fixed_old_log_probs_with_several_iterations():
    # rho = exp(logp - old) = 1.1, 1, 0.9 (inside the 0.8..1.28 clip); weights 2, 0.5, 1
    log_probs, old, sampler = _tokens([5.0, 0.5, NAN], shift=(math.log(1.1), 0.0, math.log(0.9)))
    output = grpo_loss(
        log_probs,
        old,
        torch.tensor([1.0]),
        torch.ones(1, 3),
        epsilon_high=0.28,
        sampler_log_probs=sampler,
        sampler_ratio_cap=2.0,
    )
    assert output.loss.item() == pytest.approx(-(1.1 * 2.0 + 1.0 * 0.5 + 0.9 * 1.0) / 3, rel=1e-6)
    # a clipped token: A < 0 and rho = 0.5 < 0.8, so the clipped 0.8 * A term is the min
    log_probs, old, sampler = _tokens([5.0, 0.5, NAN], shift=(math.log(0.5), 0.0, 0.0))
    output = grpo_loss(
        log_probs,
        old,
        torch.tensor([-1.0]),
        torch.ones(1, 3),
        sampler_log_probs=sampler,
        sampler_ratio_cap=2.0,
    )
    assert output.loss.item() == pytest.approx((0.8 * 2.0 + 1.0 * 0.5 + 1.0 * 1.0) / 3, rel=1e-6)


@pytest.mark.parametrize("cap", [None, 0.0])
@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_the_off_switch_gives_the_uncorrected_loss_exactly(cap, loss_type):
    log_probs, old, sampler = _tokens([5.0, 0.5, NAN], shift=(0.1, -0.2, 0.05))
    arguments = dict(loss_type=loss_type, beta=0.1, ref_log_probs=old - 0.3)
    plain = grpo_loss(log_probs, old, torch.tensor([0.7]), torch.ones(1, 3), **arguments)
    off = grpo_loss(
        log_probs,
        old,
        torch.tensor([0.7]),
        torch.ones(1, 3),
        sampler_log_probs=sampler,
        sampler_ratio_cap=cap,
        **arguments,
    )
    assert torch.equal(off.loss, plain.loss)
    assert off.sampler_ratio is not None and plain.sampler_ratio is None  # measured anyway


def test_tokens_off_the_mask_or_without_a_sampler_log_prob_are_not_measured():
    old = torch.zeros(2, 3)
    sampler = torch.tensor([[-1.0, NAN, -2.0], [0.5, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    ratio = sampler_ratio(old, sampler, mask)
    assert torch.isnan(ratio).tolist() == [[False, True, True], [False, False, False]]
    assert ratio[0, 0].item() == pytest.approx(math.e)
    assert ratio[1, 0].item() == pytest.approx(math.exp(-0.5))


def test_ratio_statistics_and_the_capped_share():
    stats = SamplerRatioStats(cap=2.0)
    stats.add(torch.tensor([[5.0, 0.5, NAN]]))
    stats.add(torch.tensor([[1.0, NAN], [1.5, 2.0]]))  # 2.0 is at the cap, not above
    stats.add(None)
    assert stats.metrics() == pytest.approx(
        {
            "sampler/ratio_mean": (5.0 + 0.5 + 1.0 + 1.5 + 2.0) / 5,
            "sampler/ratio_min": 0.5,
            "sampler/ratio_max": 5.0,
            "sampler/capped_fraction": 1 / 5,
        }
    )
    off = SamplerRatioStats(cap=0.0)
    off.add(torch.tensor([[5.0]]))
    assert off.metrics() == {
        "sampler/ratio_mean": 5.0,
        "sampler/ratio_min": 5.0,
        "sampler/ratio_max": 5.0,
    }
    assert SamplerRatioStats(cap=None).metrics() == {}


# ----------------------------------------------------------------------------- the sampler
@pytest.mark.parametrize(
    "temperature, top_k, probabilities",
    [(1.0, 0, [0.25, 0.75]), (0.5, 0, [0.1, 0.9]), (1.0, 1, [0.0, 1.0])],
)
def test_each_drawn_token_comes_with_the_log_of_its_probability(temperature, top_k, probabilities):
    # logits 0, ln 3: p = 1/4, 3/4; at T = 0.5 the logits are 0, 2 ln 3: p = 1/10, 9/10; top_k
    # = 1 keeps the likelier token only
    logits = torch.tensor([[0.0, math.log(3.0)]]).repeat(400, 1)
    torch.manual_seed(0)
    tokens, log_probs = sample_with_log_probs(logits, temperature, top_k=top_k)
    for token, probability in enumerate(probabilities):
        drawn = tokens == token
        assert drawn.any() == (probability > 0)
        if probability > 0:
            expected = [math.log(probability)] * int(drawn.sum())
            assert log_probs[drawn].tolist() == pytest.approx(expected)


PROMPTS = ["What is 2 + 3?", "Tom has 12 apples and eats 5. How many are left?", "Hi"]


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_recorded_log_probs_are_the_tempered_softmax_at_the_drawn_ids(static, temperature):
    """Against an independent full forward over prompt + completion: the same distribution
    (float32 on CPU, so the decode and the full forward agree to rounding)."""
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(len(tokenizer)).eval()
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    eos = [2] + [tokenizer.convert_tokens_to_ids(c) for c in "aeiou"]  # rows end apart
    settings = DecodeSettings(
        pad_token_id=tokenizer.pad_token_id,
        num_generations=2,
        max_new_tokens=16,
        temperature=temperature,
        static=static,
    )
    torch.manual_seed(0)
    decoded = decode(model, ids, mask, eos, settings)
    completion, recorded = decoded.ids, decoded.sampler_log_probs  # (N, C), (N, C)
    assert recorded is not None and recorded.shape == completion.shape
    valid, _ = completion_mask_from_ids(completion, eos)  # (N, C)
    full_ids = torch.cat([ids.repeat_interleave(2, 0), completion], dim=1)
    full_mask = torch.cat([mask.repeat_interleave(2, 0), torch.ones_like(completion)], dim=1)
    with torch.no_grad():
        expected = per_token_log_probs(
            model, full_ids, full_mask, completion.shape[1], temperature=temperature
        )  # (N, C)
    valid = valid.bool()
    assert valid.sum() > 20
    assert not torch.isnan(recorded[valid]).any()
    assert torch.allclose(recorded[valid], expected[valid], atol=1e-4)
    # and not the untempered log-probs (the check can tell temperatures apart)
    if temperature != 1.0:
        untempered = per_token_log_probs(model, full_ids, full_mask, completion.shape[1])
        assert not torch.allclose(recorded[valid], untempered[valid].detach(), atol=1e-2)


def test_greedy_decoding_records_nothing(tiny_model, char_tokenizer):
    result = rollout.generate(tiny_model, char_tokenizer, PROMPTS[:1], max_new_tokens=4)
    assert result.sampler_log_probs is None


SCRIPT = "a 3+4=#, ok"  # "#" is overwritten by the calculator's result


def test_forced_tokens_get_no_correction(monkeypatch):
    tokenizer = build_char_tokenizer()
    state = {"step": 0}

    def scripted(logits, temperature, top_p=1.0, top_k=0):
        """Writes SCRIPT, with each token's log-prob under softmax(logits / temperature)."""
        step, state["step"] = state["step"], state["step"] + 1
        tokens = torch.tensor([tokenizer.convert_tokens_to_ids(SCRIPT[step])] * logits.shape[0])
        log_probs = torch.log_softmax(logits.float() / temperature, dim=-1)  # (N, V)
        return tokens, log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    monkeypatch.setattr(rollout, "sample_with_log_probs", scripted)
    result = rollout.generate(
        build_tiny_model(len(tokenizer)),
        tokenizer,
        ["Q1", "Q2"],
        max_new_tokens=len(SCRIPT),
        temperature=1.0,
        calculator=Calculator(tokenizer),
    )
    forced = result.forced_mask
    assert forced[0].nonzero().flatten().tolist() == [SCRIPT.index("#")]
    recorded = result.sampler_log_probs
    drawn = result.completion_mask.bool() & ~forced
    assert torch.isnan(recorded[forced]).all() and not torch.isnan(recorded[drawn]).any()
    assert (recorded[drawn] < 0).all()
    # in the loss: a forced token's ratio is undefined, so its weight is 1
    ratio = sampler_ratio(torch.zeros_like(recorded), recorded, result.completion_mask)
    assert torch.isnan(ratio[forced]).all()
    batch = build_group_batch([result], [torch.ones(2)], pad_token_id=0, mask_truncated=False)
    assert torch.equal(torch.isnan(batch.sampler_log_probs), torch.isnan(recorded))


def test_guided_reference_rows_get_no_correction():
    tokenizer = build_char_tokenizer()
    problem = Problem("Tom has 3 apples and buys 4. How many?", "3 + 4 = 7\n#### 7", "7", "toy:1")
    sampled = Rollout(
        prompt_ids=torch.ones(2, 3, dtype=torch.long),
        prompt_mask=torch.ones(2, 3, dtype=torch.long),
        completion_ids=torch.full((2, 4), 10),
        completion_mask=torch.ones(2, 4, dtype=torch.long),
        truncated=torch.ones(2, dtype=torch.bool),
        responses=["a", "b"],
        sampler_log_probs=torch.full((2, 4), -0.5),
    )
    guided, is_reference = add_reference_rows(sampled, [problem], tokenizer, "<reasoning>\n", 2)
    recorded = guided.sampler_log_probs
    assert is_reference.tolist() == [False, False, True]
    assert (recorded[:2, :4] == -0.5).all() and torch.isnan(recorded[:2, 4:]).all()
    assert torch.isnan(recorded[2]).all()


# ----------------------------------------------------------------------------- config, run
@pytest.mark.parametrize("value", ["-1", "nan"])
def test_a_negative_cap_is_refused_by_name(value):
    with pytest.raises(SmolGRPOError, match="grpo.sampler_ratio_cap"):
        load_config(None, [f"grpo.sampler_ratio_cap={value}"])


def test_the_cap_defaults_to_trls_and_can_be_off():
    assert load_config(None, []).grpo.sampler_ratio_cap is None  # off unless asked for
    assert load_config(None, ["grpo.sampler_ratio_cap=null"]).grpo.sampler_ratio_cap is None
    assert load_config(None, ["grpo.sampler_ratio_cap=0"]).grpo.sampler_ratio_cap == 0


@pytest.mark.parametrize(
    "overrides",
    [["grpo.sampler_ratio_cap=3.0"], ["grpo.sampler_ratio_cap=0", "grpo.num_iterations=2"]],
    ids=["on", "off"],
)
def test_every_step_logs_the_sampler_ratio(tmp_path, overrides):
    tokenizer = build_char_tokenizer()
    config = load_config(None, [f"run.output_dir={tmp_path / 'run'}",
                                "sampling.num_generations=2", "sampling.max_completion_length=6",
                                "optim.prompts_per_step=2", "optim.max_steps=2",
                                "optim.warmup_steps=0", "prompt.prefill=''", *overrides])  # fmt: skip
    problems = [Problem(f"{i}+1", f"#### {i + 1}", str(i + 1), f"toy:{i}") for i in range(2)]
    trainer = Trainer(config, model=build_tiny_model(len(tokenizer)), tokenizer=tokenizer,
                      train_problems=problems, show_progress=False)  # fmt: skip
    trainer.train()
    rows = read_metrics(tmp_path / "run/metrics.jsonl")
    assert len(rows) == 2
    for row in rows:
        # float32 on CPU: the decode loop and the training forward agree to rounding
        assert row["sampler/ratio_mean"] == pytest.approx(1.0, abs=1e-3)
        assert row["sampler/ratio_min"] <= row["sampler/ratio_mean"] <= row["sampler/ratio_max"]
        assert row["sampler/ratio_max"] == pytest.approx(1.0, abs=1e-3)
        if "grpo.sampler_ratio_cap=0" in overrides:
            assert "sampler/capped_fraction" not in row
        else:
            assert row["sampler/capped_fraction"] == 0.0
