"""The supervised warm start: example encoding, loss masking, the loop, and no test problem."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model

from smolgrpo.config.loading import load_config
from smolgrpo.errors import SmolGRPOError
from smolgrpo.tasks.data import Problem, load_problems
from smolgrpo.tasks.prompts import PromptTemplate, format_reference_response
from smolgrpo.training.sft import (
    MIN_SHARED_PREFIX,
    SFTTrainer,
    build_sft_batch,
    drop_held_out,
    encode_example,
    load_sft_problems,
    sft_token_nll,
    shared_prefix_length,
)


def toy_problems(count: int = 6) -> list[Problem]:
    return [
        Problem(
            f"What is {i} plus {i}?", f"{i} + {i} = {2 * i}\n#### {2 * i}", str(2 * i), f"toy:{i}"
        )
        for i in range(count)
    ]


# ----------------------------------------------------------------------------- encoding
def test_example_masks_the_prompt_and_covers_the_whole_response_plus_eos():
    tokenizer = build_char_tokenizer()
    problem = toy_problems()[3]
    template = PromptTemplate(prefill="<reasoning>\n")
    ids, mask = encode_example(tokenizer, problem, template, [], 10_000, tokenizer.eos_token_id)
    assert len(ids) == len(mask)
    first = mask.index(1)
    assert all(m == 0 for m in mask[:first]) and all(m == 1 for m in mask[first:])
    prompt_text = tokenizer.decode(ids[:first])
    # The chat prompt without the prefill: the loss teaches the model to open <reasoning> itself.
    assert prompt_text.endswith("<|im_start|>assistant\n")
    assert "What is 3 plus 3?" in prompt_text
    response = tokenizer.decode(ids[first:-1])
    assert response == format_reference_response(problem)
    assert response.startswith("<reasoning>\n") and response.endswith("<answer>\n6\n</answer>")
    assert ids[-1] == tokenizer.eos_token_id


def test_example_is_cut_at_max_length():
    tokenizer = build_char_tokenizer()
    ids, mask = encode_example(tokenizer, toy_problems()[1], PromptTemplate(), [], 50, None)
    assert len(ids) == len(mask) == 50


def test_batch_is_right_padded_and_padding_is_never_a_target():
    batch = build_sft_batch([([5, 6, 7], [0, 1, 1]), ([5, 6, 7, 8, 9], [0, 0, 1, 1, 1])], 0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch.loss_mask.tolist() == [[0, 1, 1, 0, 0], [0, 0, 1, 1, 1]]


# ----------------------------------------------------------------------------- loss values
def test_nll_sums_only_assistant_targets_hand_computed():
    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(len(tokenizer)).eval()
    batch = build_sft_batch([([5, 6, 7, 8], [0, 0, 1, 1]), ([9, 10, 11], [0, 1, 1])], 0)
    nll, correct = sft_token_nll(model, batch)
    with torch.no_grad():
        expected = 0.0
        for ids, targets in (([5, 6, 7, 8], [2, 3]), ([9, 10, 11], [1, 2])):
            log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
            # target position t is predicted by the logits at t - 1
            expected += -sum(float(log_probs[t - 1, ids[t]]) for t in targets)
    assert float(nll.detach()) == pytest.approx(expected, rel=1e-5)
    assert 0 <= float(correct) <= 4


def test_prompt_tokens_get_no_gradient_signal():
    """Changing a prompt-only target token (masked) leaves the loss unchanged."""
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(len(tokenizer)).eval()
    a = build_sft_batch([([5, 6, 7, 8], [0, 0, 1, 1])], 0)
    b = build_sft_batch([([5, 6, 7, 8], [0, 0, 0, 1])], 0)
    nll_a, _ = sft_token_nll(model, a)
    nll_b, _ = sft_token_nll(model, b)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(a.input_ids).logits[0].float(), dim=-1)
    assert float((nll_a - nll_b).detach()) == pytest.approx(-float(log_probs[1, 7]), rel=1e-5)


def test_head_on_targets_only_matches_the_full_logits_values_and_gradients():
    """sft_token_nll's default path (the output head on target positions only) against the
    full (B, T, V) logits: the same NLL, the same correct count, the same gradients."""
    batch = build_sft_batch(
        [([5, 6, 7, 8, 9, 10], [0, 0, 1, 1, 1, 1]), ([9, 10, 11], [0, 1, 1])], 0
    )
    a = _nll_and_grads(build_tiny_model(VOCAB, seed=3), batch, targets_only=True)
    b = _nll_and_grads(build_tiny_model(VOCAB, seed=3), batch, targets_only=False)
    # atol 1e-6: float32 summation order differs between CPUs' kernels (an AMD EPYC without
    # AMX differed by 1.8e-7 on a gradient element); a masking error is ~1e-2 here
    _assert_same(a, b, nll_rel=1e-6, rtol=1e-5, atol=1e-6)


VOCAB = len(build_char_tokenizer())


def _nll_and_grads(model, batch, **options) -> tuple[float, int, dict]:
    nll, correct = sft_token_nll(model, batch, **options)
    nll.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(nll.detach()), int(correct), grads


def _assert_same(a, b, nll_rel: float, rtol: float, atol: float) -> None:
    (nll_a, correct_a, grads_a), (nll_b, correct_b, grads_b) = a, b
    assert nll_a == pytest.approx(nll_b, rel=nll_rel) and correct_a == correct_b
    _assert_same_gradients(grads_a, grads_b, rtol, atol)


def _assert_same_gradients(grads_a: dict, grads_b: dict, rtol: float, atol: float) -> None:
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 5
    for name, grad in grads_a.items():
        torch.testing.assert_close(grad, grads_b[name], rtol=rtol, atol=atol, msg=name)


def _prefixed(prefix: list[int], tails: list[tuple[list[int], list[int]]]):
    """Examples opening with the same `prefix` (masked), each then a (tail ids, tail mask)."""
    return [(prefix + ids, [0] * len(prefix) + mask) for ids, mask in tails]


def test_shared_prefix_length_stops_before_the_first_difference_padding_or_target():
    prefix = list(range(20, 40))  # 20 shared tokens
    batch = build_sft_batch(_prefixed(prefix, [([5, 6, 7], [0, 1, 1]), ([5, 9], [0, 1])]), 0)
    # columns 0-20 are equal (20 + the 5), column 21 differs; the last shared column must not
    # be followed by a target (column 21 is one), so the prefix is 20 columns, not 21
    assert shared_prefix_length(batch) == 20
    batch = build_sft_batch(_prefixed(prefix, [([5, 6, 7], [1, 1, 1]), ([5, 9], [1, 1])]), 0)
    assert shared_prefix_length(batch) == 19  # column 20 is a target: stop one before it
    short = build_sft_batch(_prefixed(prefix[:10], [([5, 6], [0, 1]), ([7, 8], [0, 1])]), 0)
    assert shared_prefix_length(short) == 0  # under MIN_SHARED_PREFIX: not worth a call
    one_row = build_sft_batch(_prefixed(prefix, [([5, 6, 7], [0, 1, 1])]), 0)
    assert shared_prefix_length(one_row) == 0


def test_shared_prefix_gives_the_full_forward_values_and_gradients():
    """A batch whose rows share a 20-token system prompt: run once through the KV cache, the
    same NLL, correct count and gradients as every row run whole (right padding included)."""
    tokenizer = build_char_tokenizer()
    prefix = [
        int(t)
        for t in torch.randint(3, len(tokenizer), (20,), generator=torch.Generator().manual_seed(1))
    ]
    tails = [
        ([5, 6, 7, 8, 9, 10], [0, 0, 1, 1, 1, 1]),
        ([9, 10, 11], [0, 1, 1]),
        ([4, 4, 12, 13], [0, 0, 0, 1]),
    ]
    batch = build_sft_batch(_prefixed(prefix, tails), 0)
    assert shared_prefix_length(batch) >= MIN_SHARED_PREFIX
    shared = _nll_and_grads(build_tiny_model(VOCAB, seed=4).train(), batch)
    whole = _nll_and_grads(build_tiny_model(VOCAB, seed=4).train(), batch, share_prefix=False)
    _assert_same(shared, whole, nll_rel=1e-5, rtol=1e-4, atol=1e-6)


def test_shared_prefix_can_be_turned_off(monkeypatch):
    """share_prefix=False (what SFTTrainer passes under gradient checkpointing) runs rows whole."""
    import smolgrpo.training.sft as sft

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(len(tokenizer)).train()
    called = []
    monkeypatch.setattr(sft, "_hidden_after_shared_prefix", lambda *a: called.append(1))
    batch = build_sft_batch(_prefixed(list(range(20, 40)), [([5, 6], [0, 1]), ([7, 8], [0, 1])]), 0)
    sft_token_nll(model, batch, share_prefix=False)
    assert called == []
    sft_token_nll(model, batch)
    assert called == [1]  # (the stub returns None: the full forward ran after it)


def test_a_model_whose_cache_cannot_be_shared_falls_back_once_with_the_same_values(
    monkeypatch, capsys
):
    from smolgrpo.models import loading as modeling

    tokenizer = build_char_tokenizer()
    batch = build_sft_batch(
        _prefixed(list(range(20, 40)), [([5, 6, 7], [0, 1, 1]), ([8, 9], [0, 1])]), 0
    )
    model = build_tiny_model(len(tokenizer), seed=5).train()
    expected, _ = sft_token_nll(model, batch, share_prefix=False)
    monkeypatch.setattr(modeling, "returned_cache", lambda output: None)  # no cache handed back
    nll, _ = sft_token_nll(model, batch)
    assert float(nll.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert modeling.cache_sharing_failed(model)
    sft_token_nll(model, batch)  # not tried again
    assert capsys.readouterr().err.count("shared SFT prefix unavailable") == 1


def test_head_on_targets_only_is_kept_for_plain_head_models():
    from smolgrpo.training.sft import _plain_head

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(len(tokenizer))
    assert _plain_head(model)  # a Llama
    model.config.model_type = "gemma2"  # soft-caps its logits after the head: full path
    assert not _plain_head(model)


# ----------------------------------------------------------------------------- held-out data
def test_drop_held_out_removes_questions_seen_in_the_eval_split():
    train = toy_problems(4)
    held_out = [Problem("  what IS 2 plus 2? ", "#### 4", "4", "test:0")]
    kept, dropped = drop_held_out(train, held_out)
    assert dropped == 1
    assert [p.origin for p in kept] == ["toy:0", "toy:1", "toy:3"]


def test_sft_data_holds_no_gsm8k_test_problem(gsm8k_dir, tmp_path):
    config = load_config(None, [f"data.source={gsm8k_dir}", f"run.output_dir={tmp_path}"])
    train = load_sft_problems(config)
    test = load_problems(str(gsm8k_dir), "test")
    test_questions = {" ".join(p.question.lower().split()) for p in test}
    assert len(train) == 7473
    assert not any(" ".join(p.question.lower().split()) in test_questions for p in train)
    assert all(p.origin.startswith(str(gsm8k_dir / "train.jsonl")) for p in train[:5])


def test_sft_refuses_to_train_on_the_eval_split(tmp_path):
    config = load_config(None, ["data.train_split=test", f"run.output_dir={tmp_path}"])
    with pytest.raises(SmolGRPOError, match="both 'test'"):
        load_sft_problems(config)


# ----------------------------------------------------------------------------- the loop
def make_sft_trainer(tmp_path, *overrides, resume=False, seed=0, problems=None):
    config = load_config(
        None,
        [
            f"run.output_dir={tmp_path / 'sft'}",
            "run.save_every=2",
            "optim.prompts_per_step=3",
            "optim.micro_batch_size=2",
            "optim.learning_rate=3e-3",
            "optim.warmup_steps=0",
            "optim.lr_schedule=constant",
            "optim.max_steps=12",
            "sft.max_length=600",
            "prompt.system_prompt=Solve it.",
            *overrides,
        ],
    )
    tokenizer = build_char_tokenizer()
    return SFTTrainer(
        config,
        train_problems=problems or toy_problems(),
        resume=resume,
        overwrite=not resume,
        show_progress=False,
        model=build_tiny_model(len(tokenizer), seed),
        tokenizer=tokenizer,
    )


def test_sft_loop_lowers_the_loss_and_saves_a_loadable_model(tmp_path):
    trainer = make_sft_trainer(tmp_path)
    final = trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "sft/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert rows[-1]["loss"] < rows[0]["loss"] * 0.8
    assert all(r["examples"] == 3 and r["trained_tokens"] > 0 for r in rows)
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(final)
    for name, parameter in trainer.model.named_parameters():
        assert torch.equal(loaded.state_dict()[name], parameter.detach())
    assert (final / "prompt_template.json").is_file()


def _train_recording_gradients(trainer) -> dict:
    """trainer.train() for one step; the gradients the optimizer step got, by parameter name."""
    step, seen = trainer.optimizer.step, {}

    def recording_step(*args, **kwargs):
        seen.update({n: p.grad.clone() for n, p in trainer.model.named_parameters()})
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    trainer.train()
    return seen


def test_micro_batch_size_does_not_change_the_update(tmp_path):
    """The gradients the optimizer gets are the same sums, however the step is cut (Adam's
    first update is nearly lr * sign(gradient), blind to a wrong scale: the gradients are
    compared, then the weights)."""
    one = make_sft_trainer(tmp_path / "a", "optim.micro_batch_size=1", "optim.max_steps=1")
    three = make_sft_trainer(tmp_path / "b", "optim.micro_batch_size=3", "optim.max_steps=1")
    _assert_same_gradients(
        _train_recording_gradients(one), _train_recording_gradients(three), 1e-4, 1e-7
    )
    # float32 sums in another order move a near-zero gradient's Adam update by ~1e-6 on some
    # CPUs (an AMD EPYC: one weight of 2,048 by 1.4e-6); lr is 3e-3
    for (name, a), (_, b) in zip(one.model.named_parameters(), three.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_micro_batches_are_cut_from_length_sorted_examples(tmp_path, monkeypatch):
    import smolgrpo.training.sft as sft

    widths = []
    original = sft.build_sft_batch

    def recording(examples, pad_token_id):
        widths.append([len(ids) for ids, _ in examples])
        return original(examples, pad_token_id)

    monkeypatch.setattr(sft, "build_sft_batch", recording)
    problems = [
        Problem(f"What is {i} plus {i}?{' Think.' * i}", f"#### {2 * i}", str(2 * i), f"t:{i}")
        for i in range(6)
    ]
    trainer = make_sft_trainer(
        tmp_path / "a", "optim.prompts_per_step=6", "optim.max_steps=1", problems=problems
    )
    trainer.train_step()
    flat = [width for batch in widths for width in batch]
    assert len(widths) >= 2 and flat == sorted(flat) and len(set(flat)) > 1


def test_sft_resume_is_bit_identical(tmp_path):
    full = make_sft_trainer(tmp_path / "full", "optim.max_steps=4")
    full.train()
    part = make_sft_trainer(tmp_path / "part", "optim.max_steps=2")
    part.train()
    resumed = make_sft_trainer(tmp_path / "part", "optim.max_steps=4", resume=True)
    assert resumed.step == 2
    resumed.train()
    for (name, a), (_, b) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), name


def test_sft_cli_runs_and_train_takes_its_output(tmp_path, monkeypatch):
    """`smolgrpo sft` writes final/, which `smolgrpo train` then loads as model.name."""
    from transformers import AutoTokenizer

    tokenizer = build_char_tokenizer()
    base = tmp_path / "base"
    build_tiny_model(len(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    data = tmp_path / "data"
    data.mkdir()
    for split, rows in (("train", toy_problems(6)), ("test", toy_problems(8)[6:])):
        (data / f"{split}.jsonl").write_text(
            "".join(json.dumps({"question": p.question, "answer": p.solution}) + "\n" for p in rows)
        )
    from smolgrpo.cli.main import main

    common = [f"data.source={data}", "optim.prompts_per_step=2", "optim.micro_batch_size=2"]
    sets = sum((["--set", s] for s in common), [])
    assert (
        main(
            [
                "sft",
                "--no-progress",
                "--set",
                f"model.name={base}",
                "--set",
                "optim.max_steps=2",
                "--output-dir",
                str(tmp_path / "sft"),
                *sets,
            ]
        )
        == 0
    )
    final = tmp_path / "sft" / "final"
    assert AutoTokenizer.from_pretrained(final).eos_token == "<|im_end|>"
    assert (
        main(
            [
                "train",
                "--no-progress",
                "--set",
                f"model.name={final}",
                "--set",
                "optim.max_steps=1",
                "--set",
                "sampling.num_generations=2",
                "--set",
                "sampling.max_completion_length=4",
                "--output-dir",
                str(tmp_path / "grpo"),
                *sets,
            ]
        )
        == 0
    )
    assert (tmp_path / "grpo" / "final" / "model.safetensors").is_file()
