"""Supervised warm start (`smolgrpo sft`): fine-tune on worked solutions before GRPO.

DeepSeek-R1's "cold start": before RL, a short supervised pass on solutions written in the target
format, so that RL starts from a policy that already writes `<reasoning>…</reasoning>
<answer>…</answer>` and spends its samples on getting answers right. Here the solutions are
GSM8K's own train-split reference solutions rewritten in the tag format
(`prompts.format_reference_response`, calculator annotations removed), or, for a JSONL/CSV
task, the worked steps of its `data.solution_field` column.

How it is built:
- The prompt is the same chat template and system prompt as GRPO (few-shot examples too, if the
  recipe asks for them), *without* the prefill: the loss covers the whole assistant turn,
  `<reasoning>` included, then EOS. The model so learns to open the tag itself, and a prefilled
  `<reasoning>\\n` at GRPO or eval time is simply the start of what it learned to write.
- The loss is the mean negative log-likelihood over the assistant tokens of the step (prompt and
  padding tokens are masked out), token-level like DAPO's normalisation.
- One loop style: `SFTTrainer` is the GRPO `Trainer` with another `train_step`, so it shares the
  config, run folder, checkpoints, resume, stop handling, metrics, progress, periodic eval and the
  `final/` folder, which `smolgrpo train` takes as `model.name`.
- `optim.prompts_per_step` is the number of examples per optimizer step; `sft.max_length`
  truncates prompt + response. Problems whose question also appears in the eval split are dropped
  (there are none in GSM8K; the check guards other data), so no test problem is trained on.

Run it with `smolgrpo sft --config recipes/cpu-sft.yaml` (trainer.run_training with
`trainer_class=SFTTrainer`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from smolgrpo.config.schema import Config
from smolgrpo.errors import SmolGRPOError, warn
from smolgrpo.models import distributed as dist_utils
from smolgrpo.models.loading import (
    CACHE_SHARING_ERRORS,
    cache_sharing_failed,
    forward_after_prefix,
    mark_cache_sharing_failed,
)
from smolgrpo.tasks import build_task, load_train_problems, task_kind
from smolgrpo.tasks.data import Problem
from smolgrpo.tasks.prompts import PromptTemplate, format_reference_response, render_prompt
from smolgrpo.training.group_collection import prompts_for_rank
from smolgrpo.training.optimizer_step import optimizer_step
from smolgrpo.training.trainer import Trainer


# ----------------------------------------------------------------------------- data
def normalise_question(text: str) -> str:
    return " ".join(text.lower().split())


def drop_held_out(train: list[Problem], held_out: list[Problem]) -> tuple[list[Problem], int]:
    """(train problems whose question is not in `held_out`, how many were dropped)."""
    seen = {normalise_question(p.question) for p in held_out}
    kept = [p for p in train if normalise_question(p.question) not in seen]
    return kept, len(train) - len(kept)


def load_sft_problems(config: Config) -> list[Problem]:
    """The train split, minus any problem whose question is also in the eval split."""
    data = config.data
    # The targets are worked solutions: GSM8K's, or a file task's data.solution_field column.
    kind = task_kind(data.task)
    if not kind.has_worked_solutions(data):
        raise SmolGRPOError(
            "sft needs worked solutions: data.task gsm8k, or jsonl/csv/hub with "
            f"data.solution_field (not '{data.task}'"
            f"{' without data.solution_field' if kind.field_mapped else ''})"
        )
    if config.data.train_split == config.data.eval_split:
        raise SmolGRPOError(
            f"data.train_split and data.eval_split are both '{config.data.train_split}': "
            "SFT would train on the problems it is evaluated on"
        )
    task = build_task(data)
    train = load_train_problems(task, data)
    try:
        held_out = task.load(data.eval_split)
    except SmolGRPOError as error:  # e.g. a single JSONL file: nothing to compare against
        warn(f"could not load the eval split to exclude its problems ({error})")
        return train
    kept, dropped = drop_held_out(train, held_out)
    if dropped:
        warn(f"dropped {dropped} train problem(s) whose question is in the eval split")
    if not kept:
        raise SmolGRPOError("no train problem left after removing the eval split's questions")
    return kept


@dataclass
class SFTBatch:
    input_ids: torch.Tensor  # (B, T) right-padded
    attention_mask: torch.Tensor  # (B, T)
    loss_mask: torch.Tensor  # (B, T) 1 on assistant tokens (the targets), 0 on prompt/padding


def encode_example(
    tokenizer,
    problem: Problem,
    template: PromptTemplate,
    few_shot: list[Problem],
    max_length: int,
    eos_token_id: int | None,
) -> tuple[list[int], list[int]]:
    """(token ids, loss mask) of one example: chat prompt without prefill, then the response."""
    no_prefill = dataclasses.replace(template, prefill="")
    prompt = render_prompt(tokenizer, problem.question, no_prefill, few_shot)
    response = format_reference_response(problem)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if eos_token_id is not None:
        response_ids = response_ids + [eos_token_id]
    ids = (prompt_ids + response_ids)[:max_length]
    mask = ([0] * len(prompt_ids) + [1] * len(response_ids))[:max_length]
    return ids, mask


def build_sft_batch(examples: list[tuple[list[int], list[int]]], pad_token_id: int) -> SFTBatch:
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    loss_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, mask) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        loss_mask[row, : len(ids)] = torch.tensor(mask)
    return SFTBatch(input_ids, attention, loss_mask)


# ----------------------------------------------------------------------------- loss
# Architectures whose logits are exactly lm_head(decoder output): no logit scaling or soft-capping
# after the head, so the head can be run on the target positions alone.
PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def sft_token_nll(
    model, batch: SFTBatch, targets_only: bool = True, share_prefix: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL over the batch's target tokens, number of correctly predicted targets).

    Token t is predicted from the logits at t - 1, so the targets are input_ids[:, 1:] where
    loss_mask[:, 1:] is 1. `targets_only` (a PLAIN_HEAD_TYPES model, not FSDP-sharded): the
    output head runs on the target positions alone, so no (B, T, V) logits exist; the prompt
    and padding positions, about half of an SFT batch, cost no head compute and no memory.
    The values are those of the full logits (tests/test_sft.py). With it, `share_prefix` runs
    the rows' common opening (the system prompt) once: off under gradient checkpointing, which
    turns the KV cache off."""
    targets_mask = batch.loss_mask[:, 1:].bool()  # (B, T-1)
    targets = batch.input_ids[:, 1:][targets_mask]  # (N,)
    if targets_only and _plain_head(model):
        share_prefix = share_prefix and not cache_sharing_failed(model)
        prefix = shared_prefix_length(batch) if share_prefix else 0
        hidden = _hidden_after_shared_prefix(model, batch, prefix) if prefix else None
        if hidden is not None:  # (B, T - prefix, H)
            targets_mask = targets_mask[:, prefix:]  # hidden[:, j] predicts token prefix + j + 1
        else:
            hidden = model.get_decoder()(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask
            ).last_hidden_state  # (B, T, H)
        logits = model.get_output_embeddings()(hidden[:, :-1][targets_mask]).float()  # (N, V)
    else:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logits = logits[:, :-1][targets_mask].float()  # (N, V)
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    correct = (logits.argmax(dim=-1) == targets).sum()
    return nll, correct.detach()


# Every example of a micro-batch opens with the same chat header and system prompt (64 of the
# ~240 tokens of a GSM8K example with the default prompt). Run once and shared through the KV
# cache, it costs one row's compute instead of B rows'; the values and gradients are those of the
# full forward (a causal model's prefix states do not depend on what follows; the expanded cache
# sums its rows' gradients back). Shorter shared prefixes are not worth a second forward call.
MIN_SHARED_PREFIX = 16


def shared_prefix_length(batch: SFTBatch) -> int:
    """Leading columns equal in every row, unpadded and target-free, or 0 when under
    MIN_SHARED_PREFIX or the batch has one row. No target sits in the prefix or right after it
    (the prefix's last state would have to predict one)."""
    ids = batch.input_ids  # (B, T)
    if ids.shape[0] < 2:
        return 0
    plain = (ids == ids[:1]).all(dim=0) & batch.attention_mask.bool().all(dim=0)
    plain &= ~batch.loss_mask.bool().any(dim=0)  # (T,)
    length = int(plain.long().cumprod(dim=0).sum())
    length = min(length - 1, ids.shape[1] - 2)  # the prefix's next token is no target either
    return length if length >= MIN_SHARED_PREFIX else 0


def _hidden_after_shared_prefix(model, batch: SFTBatch, prefix: int) -> torch.Tensor | None:
    """Decoder states (B, T - prefix, H) of the positions after a shared prefix run once, or
    None where the model's cache cannot be shared (the caller runs the full forward)."""
    decoder = model.get_decoder()
    rows, width = batch.input_ids.shape
    device = batch.input_ids.device
    try:
        output = decoder(input_ids=batch.input_ids[:1, :prefix], use_cache=True)
        return forward_after_prefix(
            decoder,
            output,
            torch.zeros(rows, dtype=torch.long, device=device),  # every row: the one prefix
            input_ids=batch.input_ids[:, prefix:],
            attention_mask=batch.attention_mask,
            position_ids=torch.arange(prefix, width, device=device).expand(rows, -1),
        ).last_hidden_state
    except CACHE_SHARING_ERRORS as error:
        # A model whose cache cannot be expanded or fed back: the full forward, said once.
        warn(f"{type(model).__name__}: shared SFT prefix unavailable ({type(error).__name__})")
        mark_cache_sharing_failed(model)
        return None


def _plain_head(model) -> bool:
    config = getattr(model, "config", None)
    return (
        getattr(config, "model_type", None) in PLAIN_HEAD_TYPES
        and callable(getattr(model, "get_decoder", None))
        and callable(getattr(model, "get_output_embeddings", None))
    )


# ----------------------------------------------------------------------------- the loop
class SFTTrainer(Trainer):
    """The GRPO trainer's loop, checkpoints and outputs with a supervised step."""

    stage = "sft"

    def __init__(self, config: Config, train_problems: list[Problem] | None = None, **kwargs):
        if train_problems is None:
            train_problems = load_sft_problems(config)
        super().__init__(config, train_problems=train_problems, **kwargs)
        self.reference_model = None  # no KL term in supervised training
        self.eos_token_id = self.tokenizer.eos_token_id

    def train_step(self) -> tuple[dict, list]:
        config = self.config
        started = time.perf_counter()
        problems = prompts_for_rank(
            self.stream.take(config.optim.prompts_per_step), self.rank, self.world_size
        )
        examples = self.encode_examples(problems)
        local_tokens = float(sum(sum(mask[1:]) for _, mask in examples))
        global_tokens = max(dist_utils.all_sum(local_tokens), 1.0)
        nll_sum, correct_sum = self.accumulate_gradients(examples, global_tokens)
        self.check_stop()
        loss = dist_utils.all_sum(nll_sum) / global_tokens
        grad_norm, bad = optimizer_step(self, loss)
        self.step += 1
        elapsed = time.perf_counter() - started
        metrics = {
            "step": self.step,
            "loss": loss,
            "token_accuracy": dist_utils.all_sum(correct_sum) / global_tokens,
            "grad_norm": grad_norm,
            "bad_steps": int(bad),
            "learning_rate": self.scheduler.get_last_lr()[0],
            "examples": int(dist_utils.all_sum(float(len(problems)))),
            "trained_tokens": int(global_tokens),
            "tokens_per_s": global_tokens / max(elapsed, 1e-9),
            "step_time_s": elapsed,
        }
        if self.device.type == "cuda":
            metrics["peak_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return metrics, []

    def encode_examples(self, problems: list[Problem]) -> list[tuple[list[int], list[int]]]:
        """(token ids, loss mask) of each problem, shortest first."""
        examples = [
            encode_example(
                self.tokenizer,
                problem,
                self.template,
                self.few_shot,
                self.config.sft.max_length,
                self.eos_token_id,
            )
            for problem in problems
        ]
        # Micro-batches of similar lengths pad less (12-19% fewer tokens on GSM8K); the loss is
        # a sum over all the step's targets, so the order changes nothing else.
        examples.sort(key=lambda example: len(example[0]))
        return examples

    def accumulate_gradients(
        self, examples: list[tuple[list[int], list[int]]], global_tokens: float
    ) -> tuple[float, float]:
        """Backward of the mean NLL over micro-batches; (summed NLL, correct targets) here."""
        micro = self.config.optim.micro_batch_size
        nll_sum = correct_sum = 0.0
        for start in range(0, len(examples), micro):
            self.check_stop()
            batch = build_sft_batch(examples[start : start + micro], self.tokenizer.pad_token_id)
            batch = SFTBatch(*(t.to(self.device) for t in dataclasses.astuple(batch)))
            with self.autocast():
                nll, correct = sft_token_nll(
                    self.model,
                    batch,
                    not self.sharded,
                    not self.config.model.gradient_checkpointing,
                )
            (nll / global_tokens).backward()
            nll_sum += float(nll.detach())
            correct_sum += float(correct)
        return nll_sum, correct_sum
