"""The GRPO training loop: rollout -> reward -> advantage -> loss -> step -> log -> checkpoint.

Run it with `smolgrpo train --config recipes/cpu-smoke.yaml`, or under
`torchrun --nproc_per_node N smolgrpo train ...` for several GPUs (or CPU processes with gloo).

How it departs from DeepSeekMath's GRPO (each is a config switch, see config.py):
- token-level loss normalisation (`dapo`) and clip-higher (`epsilon_high`) from DAPO;
- no KL term by default (`beta: 0`), so no reference model is built;
- optional dynamic sampling: groups whose G rewards are all equal carry no gradient, so with
  `filter_zero_std_groups` they are dropped and more prompts are drawn to refill the batch.

Multi-process: every rank draws the same global batch of prompts and takes its own slice of
whole groups, so group advantages are computed where the group lives. Gradients are summed
across ranks by one all-reduce of a flat buffer after local accumulation (no DDP wrapper: ranks
may run different numbers of micro-batches under dynamic sampling), and parameters are
broadcast from rank 0 at start, so all ranks hold identical weights after every step. Only rank
0 writes files. With `model.fsdp` the model is sharded over the ranks instead (see fsdp.py).
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from smolgrpo import distributed as dist_utils
from smolgrpo import fsdp, guards
from smolgrpo.batching import GroupBatch, PromptStream, build_group_batch, select_rows
from smolgrpo.checkpoint import (
    latest_good_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
)
from smolgrpo.config import Config
from smolgrpo.data import Problem
from smolgrpo.errors import warn
from smolgrpo.grpo import group_advantages, grpo_loss, zero_std_keep_mask
from smolgrpo.interrupts import StopRequested, StopSignal, restore_rng, rng_snapshot
from smolgrpo.logprobs import completion_log_probs
from smolgrpo.prompts import render_prompt, select_few_shot
from smolgrpo.rollout import Rollout, generate
from smolgrpo.tasks import build_task


# ----------------------------------------------------------------------------- the trainer
class Trainer:
    def __init__(
        self,
        config: Config,
        resume: bool = False,
        overwrite: bool = False,
        show_progress: bool = True,
        model=None,
        tokenizer=None,
        train_problems: list[Problem] | None = None,
        eval_problems: list[Problem] | None = None,
    ):
        from smolgrpo.run_setup import build_optimizer, frozen_copy, prepare_run_dir, setup_model

        self.config = config
        self.show_progress = show_progress
        self.rank, self.world_size = dist_utils.init()
        self.is_main = self.rank == 0
        self.sharded = fsdp.enabled(config, self.world_size, self.is_main)  # FSDP2
        self.run_dir = Path(config.run.output_dir)
        if self.is_main:
            prepare_run_dir(self.run_dir, config, resume, overwrite)
        dist_utils.barrier()
        random.seed(config.run.seed)
        torch.manual_seed(config.run.seed)  # for what set-up draws (LoRA's init)
        self.model, self.tokenizer, self.device, self.autocast_dtype = setup_model(
            config, model, tokenizer, self.rank, sharded=self.sharded
        )
        # Seeded again after loading: what a loader drew (a cold cache converts the embedded
        # model once, building it with a random init) must not shift the sampled completions.
        torch.manual_seed(config.run.seed + self.rank)  # ranks sample different completions
        dist_utils.broadcast_parameters(self.model)
        self.reference_model = None
        if config.grpo.beta > 0:  # only built when the KL term is on (never sharded)
            self.reference_model = frozen_copy(self.model).to(self.device)
        if self.sharded:  # after the broadcast: all ranks shard the same weights
            fsdp.shard_model(self.model)
        self.template, self.task = config.prompt.template(), build_task(config.data)
        self.train_problems = (
            train_problems
            if train_problems is not None
            else self.task.load(config.data.train_split, config.data.train_limit)
        )
        self.eval_problems = eval_problems
        self.few_shot = select_few_shot(
            self.train_problems, config.prompt.num_few_shot, config.run.seed
        )
        self.stream = PromptStream(self.train_problems, config.run.seed)
        self.optimizer, self.scheduler = build_optimizer(self.model, config)
        self.step = 0
        self.saved_step: int | None = None  # the step of the newest checkpoint this run wrote
        self.stop_signal = StopSignal(
            config.run.stop_grace_s, describe=self._newest_checkpoint, announce=self.is_main
        )
        self.eval_cut_short = False
        self.progress = None  # the running loop's TrainProgress, told each step's phase
        self.bad_steps_in_a_row = 0  # NaN/inf steps skipped in a row (guards.py)
        if resume:
            self._resume()

    # ------------------------------------------------------------------ resume / stop
    def _resume(self) -> None:
        checkpoint = latest_good_checkpoint(self.run_dir)
        if checkpoint is None:
            if self.is_main:
                from smolgrpo.metrics import truncate_metrics

                truncate_metrics(self.run_dir / "metrics.jsonl", 0)  # rows of the lost steps
                warn(f"{self.run_dir}: no checkpoint to resume from; starting at step 0")
            return
        state = load_checkpoint(
            checkpoint,
            self.model,
            self.optimizer,
            self.scheduler,
            rank=self.rank,
            sharded=self.sharded,
        )
        self.step = self.saved_step = state["step"]
        self.stream = PromptStream(self.train_problems, self.config.run.seed, **state["data"])
        if self.is_main:
            from smolgrpo.metrics import truncate_metrics

            truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
            print(f"resumed from {checkpoint} (step {self.step})")

    # A stop (signal or request_stop) is honoured at the next check point: between decode
    # steps, between micro-batches before the step's first optimizer update, in periodic eval.
    # The step in progress is then dropped: the state captured at its start (RNG, prompt-stream
    # position) is put back and no gradient is kept, so the checkpoint holds the last finished
    # step exactly as an uninterrupted run had it, and --resume continues bit for bit. With
    # several ranks no rank may leave a step alone (the others would wait in a collective):
    # they finish the step and stop together at its end.
    def request_stop(self, *_) -> None:
        self.stop_signal.request()

    def stop_pending(self) -> bool:
        """True when the step in progress is to be dropped (the `should_stop` callback)."""
        return self.world_size == 1 and self.stop_signal.requested

    def check_stop(self) -> None:
        """A check point: raises StopRequested when the step in progress is to be dropped."""
        if self.stop_pending():
            raise StopRequested(self.stop_signal.signal_name or "stop requested")

    def _step_start_state(self) -> dict:
        return {"rng": rng_snapshot(), "stream": self.stream.state()}

    def _restore_step_start(self, state: dict) -> None:
        restore_rng(state["rng"])
        # Rebuilt as --resume rebuilds it, so the position is exactly the checkpointed one.
        self.stream = type(self.stream)(self.stream.problems, self.stream.seed, **state["stream"])
        self.optimizer.zero_grad(set_to_none=True)

    def _newest_checkpoint(self) -> str:
        found = list_checkpoints(self.run_dir)
        return f"the newest checkpoint is {found[-1]}" if found else "no checkpoint was written"

    def _stop(self, cut_short: bool) -> None:
        """Checkpoint the last finished step (unless already done) and say so in one line."""
        if self.step > 0 and self.saved_step != self.step:
            self.save_checkpoint()
        if not self.is_main:
            return None
        details = []
        if cut_short:
            details.append(f"step {self.step + 1} cut short and dropped")
        if self.eval_cut_short:
            details.append(f"the periodic eval of step {self.step} cut short")
        details.append(self.stop_signal.summary())
        if self.step == 0:
            print(f"stopped before step 1 finished; nothing to save ({'; '.join(details)})")
        else:
            print(
                f"stopped at step {self.step}; checkpoint written, resume with --resume "
                f"({'; '.join(details)})",
                flush=True,
            )
        return None

    # ------------------------------------------------------------------ one step
    def _prompts_for_this_rank(self, problems: list[Problem]) -> list[Problem]:
        per_rank = math.ceil(len(problems) / self.world_size)
        return problems[self.rank * per_rank : (self.rank + 1) * per_rank]

    def collect_groups(self) -> tuple[list[Rollout], list[torch.Tensor], list[Problem], dict]:
        """Rollouts, rewards and advantages for this step, refilling zero-signal groups if asked."""
        config, G = self.config, self.config.sampling.num_generations
        kept_rollouts, kept_advantages, kept_problems = [], [], []
        reward_log: dict[str, list[float]] = {}
        reward_times: dict[str, float] = {}  # seconds per reward: a slow plug-in shows up
        stats = {
            "groups_generated": 0,
            "zero_std_groups": 0,
            "generation_s": 0.0,
            "reward_s": 0.0,
            "generated_tokens": 0,
            "truncated": 0,
            "lengths": [],
            "problems": [],
            "responses": [],
            "totals": [],
        }
        rounds = 1 + (config.grpo.max_refill_rounds if config.grpo.filter_zero_std_groups else 0)
        quota = math.ceil(config.optim.prompts_per_step / self.world_size)  # groups per rank
        for _ in range(rounds):
            # Every rank must draw the same prompts from the stream to stay in step: draw
            # enough for the rank that lacks the most, then keep this rank's slice.
            deficit = int(dist_utils.all_max(float(quota - len(kept_problems))))
            problems = self._prompts_for_this_rank(self.stream.take(deficit * self.world_size))
            self.phase("generating")
            started = time.perf_counter()
            with self._autocast():
                rollout = generate(
                    self.model,
                    self.tokenizer,
                    [
                        render_prompt(self.tokenizer, p.question, self.template, self.few_shot)
                        for p in problems
                    ],
                    num_generations=G,
                    max_new_tokens=config.sampling.max_completion_length,
                    temperature=config.sampling.temperature,
                    top_p=config.sampling.top_p,
                    top_k=config.sampling.top_k,
                    prefill=self.template.prefill,
                    ignore_eos=config.sampling.ignore_eos,
                    synced=self.sharded,
                    should_stop=self.stop_pending,
                )
            stats["generation_s"] += time.perf_counter() - started
            self.phase("scoring")
            started = time.perf_counter()
            golds = [p.gold for p in problems for _ in range(G)]
            questions = [p.question for p in problems for _ in range(G)]
            scored = self.task.score(
                rollout.responses, golds, config.rewards.weights, questions, self.step + 1
            )
            stats["reward_s"] += time.perf_counter() - started
            rewards = torch.tensor(scored.total, dtype=torch.float32)  # (n * G,)
            if config.grpo.scale_rewards == "batch":
                advantages, zero_std = _batch_scaled_advantages(rewards, G)
            else:
                advantages, zero_std = group_advantages(rewards, G, config.grpo.scale_rewards)
            for name, values in scored.per_reward.items():
                reward_log.setdefault(name, []).extend(values)
                reward_times[name] = reward_times.get(name, 0.0) + scored.seconds[name]
            stats["totals"].extend(scored.total)
            stats["groups_generated"] += len(problems)
            stats["zero_std_groups"] += int(zero_std.sum())
            stats["generated_tokens"] += int(rollout.completion_mask.sum())
            stats["truncated"] += int(rollout.truncated.sum())
            stats["lengths"].extend(rollout.completion_lengths.tolist())
            stats["problems"].extend(problems)
            stats["responses"].extend(rollout.responses)
            keep = ~zero_std if config.grpo.filter_zero_std_groups else torch.ones_like(zero_std)
            if keep.any():
                rows = zero_std_keep_mask(~keep, G).to(rollout.completion_ids.device)  # (n * G,)
                kept_rollouts.append(select_rows(rollout, rows))
                kept_advantages.append(advantages.to(rows.device)[rows])
                kept_problems.extend(p for p, k in zip(problems, keep.tolist()) if k)
            if dist_utils.all_max(float(quota - len(kept_problems))) <= 0:
                break
        stats["rewards"], stats["reward_times"] = reward_log, reward_times
        return kept_rollouts, kept_advantages, kept_problems, stats

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def train_on_batch(self, batch: GroupBatch | None) -> dict:
        """num_iterations optimizer steps on one generation batch; returns loss statistics.

        `batch` is None on a rank that kept no group while another rank did: it still joins
        every collective (token counts, gradient all-reduce) with a zero gradient.
        """
        config = self.config
        rows = 0 if batch is None else batch.completion_ids.shape[0]
        micro = config.optim.micro_batch_size
        slices = [slice(i, min(i + micro, rows)) for i in range(0, rows, micro)]
        # dapo/bnpo normalise by the token count of the whole step on all ranks; gradients are
        # summed across ranks, so each rank divides by the global count. At least 1: when every
        # completion is masked (mask_truncated_completions) the loss is 0, not 0/0 = NaN.
        local_tokens = 0.0 if batch is None else float(batch.completion_mask.sum())
        global_tokens = max(dist_utils.all_sum(local_tokens), 1.0)
        global_rows = dist_utils.all_sum(float(rows))
        old_log_probs = ref_log_probs = None
        if slices and (config.grpo.num_iterations > 1 or self.reference_model is not None):
            with torch.no_grad(), self._autocast():
                if config.grpo.num_iterations > 1:
                    old_log_probs = self._log_probs(self.model, batch, slices)  # (N, C)
                if self.reference_model is not None:
                    ref_log_probs = self._log_probs(self.reference_model, batch, slices)  # (N, C)
        totals = {"loss": 0.0, "clip_fraction": 0.0, "kl": 0.0, "grad_norm": 0.0}
        entropy_sum = 0.0  # over this rank's valid tokens, first pass only
        for iteration in range(config.grpo.num_iterations):
            for part in slices:
                if iteration == 0:  # after the first optimizer update, the step is finished
                    self.check_stop()
                with self._autocast():
                    log_probs, entropy = self._completion_log_probs(
                        self.model, batch, part, return_entropy=True
                    )  # (n, C), (n, C)
                    output = grpo_loss(
                        log_probs,
                        None if old_log_probs is None else old_log_probs[part],
                        batch.advantages[part],
                        batch.completion_mask[part],
                        loss_type=config.grpo.loss_type,
                        epsilon=config.grpo.epsilon,
                        epsilon_high=config.grpo.epsilon_high,
                        beta=config.grpo.beta,
                        ref_log_probs=None if ref_log_probs is None else ref_log_probs[part],
                        max_completion_length=config.sampling.max_completion_length,
                        num_items_in_batch=global_tokens,
                    )
                # grpo and dr_grpo average over the rows of their micro-batch: weight each
                # micro-batch by its share of all rows so the sum is the full-batch loss.
                weight = (
                    1.0
                    if config.grpo.loss_type in ("dapo", "bnpo")
                    else (part.stop - part.start) / global_rows
                )
                (output.loss * weight).backward()
                if iteration == 0:
                    entropy_sum += float((entropy * batch.completion_mask[part]).sum())
                share = (part.stop - part.start) / rows / config.grpo.num_iterations
                totals["loss"] += float(output.loss.detach()) * weight / config.grpo.num_iterations
                totals["clip_fraction"] += float(output.clip_fraction) * share
                if output.kl is not None:
                    totals["kl"] += float(output.kl) * share
            if not self.sharded:  # FSDP has already reduce-scattered (summed) the gradients
                dist_utils.all_reduce_gradients(self.model)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], config.optim.max_grad_norm
            )
            grad_norm = fsdp.local_value(grad_norm)
            totals["grad_norm"] += float(grad_norm) / config.grpo.num_iterations
            # NaN/inf in log-probs, loss or gradients: skip the update on every rank alike (the
            # zero_grad below drops the gradients); the scheduler still steps, to stay on time.
            if dist_utils.any_true(not guards.is_finite_step(totals["loss"], grad_norm)):
                totals["bad_steps"] = totals.get("bad_steps", 0) + 1
            else:
                self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        totals["loss"] = dist_utils.all_sum(totals["loss"])
        totals["entropy"] = dist_utils.all_sum(entropy_sum) / global_tokens
        return totals

    def _log_probs(self, model, batch: GroupBatch, slices: list[slice]) -> torch.Tensor:
        return torch.cat([self._completion_log_probs(model, batch, s) for s in slices])  # (N, C)

    def _completion_log_probs(self, model, batch: GroupBatch, rows: slice, return_entropy=False):
        # Each group's prompt runs once (logprobs.py), except where the KV cache is off in
        # training (gradient checkpointing) or FSDP would see two forwards per backward.
        share_prompt = not (self.config.model.gradient_checkpointing or self.sharded)
        # Columns past this micro-batch's longest counted completion only hold padding: skip
        # them (the batch is padded to the longest completion of the whole step), then pad the
        # results back to C with zeros, which the completion mask ignores.
        width = batch.completion_ids.shape[1]
        used = max(1, int(batch.completion_mask[rows].sum(dim=1).max()))
        result = completion_log_probs(
            model,
            batch.prompt_ids[rows],
            batch.prompt_mask[rows],
            batch.completion_ids[rows, :used],
            temperature=self.config.sampling.temperature,
            return_entropy=return_entropy,
            share_prompt=share_prompt,
        )  # (n, used) or a pair of them
        pad = width - used
        if pad == 0:
            return result
        padded = [
            torch.nn.functional.pad(t, (0, pad)) for t in (result if return_entropy else [result])
        ]
        return tuple(padded) if return_entropy else padded[0]

    def train_step(self) -> dict:
        step_started = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        rollouts, advantages, problems, stats = self.collect_groups()
        self.phase("training")
        backward_started = time.perf_counter()
        # Decided globally: a rank that kept no group must still join the other ranks' update.
        if dist_utils.any_true(bool(rollouts)):
            batch = None
            if rollouts:
                batch = build_group_batch(
                    rollouts,
                    advantages,
                    self.tokenizer.pad_token_id,
                    self.config.grpo.mask_truncated_completions,
                )
            losses = self.train_on_batch(batch)
        else:  # every group was uninformative: no update, but the step still counts
            losses = dict.fromkeys(("loss", "clip_fraction", "kl", "grad_norm", "entropy"), 0.0)
            if self.is_main:
                warn(f"step {self.step + 1}: all groups had equal rewards; no update")
            for _ in range(self.config.grpo.num_iterations):  # keep the LR schedule on time
                self.scheduler.step()
        self.step += 1
        from smolgrpo.metrics import step_metrics

        return step_metrics(
            self,
            stats,
            losses,
            problems,
            timings={
                "step_s": time.perf_counter() - step_started,
                "train_s": time.perf_counter() - backward_started,
            },
        )

    # ------------------------------------------------------------------ the loop
    def train(self) -> Path | None:
        from smolgrpo.metrics import MetricsLogger, TrainProgress
        from smolgrpo.run_setup import save_final_model

        config = self.config
        logger = MetricsLogger(self.run_dir, enabled=self.is_main, config=config)  # + trackers
        self.progress = progress = TrainProgress(
            config.optim.max_steps,
            self.step,
            enabled=self.is_main and self.show_progress,
            label=getattr(self, "stage", "train"),
        )
        with self.stop_signal, progress, logger:  # signal handlers while training; trackers
            while self.step < config.optim.max_steps:
                step_start = self._step_start_state()
                try:
                    metrics, samples = self.train_step()
                except StopRequested:  # nothing of the step was applied: put back its start
                    self._restore_step_start(step_start)
                    return self._stop(cut_short=True)
                if config.run.eval_every and self.step % config.run.eval_every == 0:
                    metrics.update(self.periodic_eval())
                logger.log(
                    metrics,
                    samples
                    if self.step % config.run.log_samples_every == 0 or self.step == 1
                    else None,
                )
                progress.update(metrics)
                # Raises before any checkpoint of a diverged run can replace a good one.
                self.bad_steps_in_a_row = guards.count_bad_steps(
                    self.bad_steps_in_a_row, metrics, config.optim.max_bad_steps, self.run_dir
                )
                stop = dist_utils.any_true(self.stop_signal.requested)  # all ranks stop together
                if self.step % config.run.save_every == 0 or self.step == config.optim.max_steps:
                    self.save_checkpoint()
                if stop:
                    return self._stop(cut_short=False)
        final = None
        full_state = fsdp.full_state_dict(self.model) if self.sharded else None  # collective
        if self.is_main:
            final = save_final_model(self, full_state)
        dist_utils.barrier()
        return final

    def phase(self, name: str) -> None:
        """Show what the step is doing now (generating, scoring, ...) in the progress bar."""
        if self.progress is not None:
            self.progress.phase(name)

    def save_checkpoint(self) -> None:
        self.phase("saving")
        rank_rng_states = dist_utils.gather_objects([rng_state()])  # every rank's own RNG
        model_state = optimizer_state = None
        if self.sharded:  # gathered from all ranks' shards (collective), on rank 0
            model_state = fsdp.trainable_full_state(self.model)
            optimizer_state = fsdp.full_optimizer_state(self.model, self.optimizer)
        if self.is_main:
            save_checkpoint(
                self.run_dir,
                self.step,
                self.model,
                self.optimizer,
                self.scheduler,
                self.stream.state(),
                keep=self.config.run.keep_checkpoints,
                rank_rng_states=rank_rng_states,
                model_state=model_state,
                optimizer_state=optimizer_state,
            )
        self.saved_step = self.step
        dist_utils.barrier()

    def periodic_eval(self) -> dict:
        from smolgrpo.evaluate import evaluate

        self.phase("evaluating")
        result = {}
        if self.is_main or self.sharded:  # under FSDP every rank takes part in each forward
            if self.eval_problems is None:
                self.eval_problems = self.task.load(
                    self.config.data.eval_split, self.config.run.eval_limit
                )
            rng_state = torch.get_rng_state()  # evaluation must not shift the training RNG
            try:
                with self._autocast():
                    metrics, _ = evaluate(
                        self.model,
                        self.tokenizer,
                        self.eval_problems,
                        template=self.template,
                        few_shot=self.few_shot,
                        batch_size=self.config.run.eval_batch_size,
                        max_new_tokens=self.config.sampling.max_completion_length,
                        reward_weights=self.config.rewards.weights,
                        answer_check=self.task.answer_check,
                        show_progress=False,
                        synced=self.sharded,
                        should_stop=self.stop_pending,
                    )
            except StopRequested:  # the step is finished and kept; only its eval is lost
                metrics, self.eval_cut_short = None, True
            finally:
                torch.set_rng_state(rng_state)
            if self.is_main and metrics is not None:
                from smolgrpo.metrics import PERIODIC_EVAL_KEYS

                result = {f"eval/{k}": metrics[k] for k in PERIODIC_EVAL_KEYS}
        dist_utils.barrier()
        return result


def _batch_scaled_advantages(rewards: torch.Tensor, num_generations: int):
    """`scale_rewards: batch` over the whole step on all ranks, not just this rank's groups."""
    centred, zero_std = group_advantages(rewards, num_generations, "none")
    std = dist_utils.global_std(rewards)
    return centred / (std + 1e-4), zero_std


def run_training(
    config: Config, resume: bool = False, overwrite: bool = False, show_progress: bool = True
) -> Path | None:
    try:
        with guards.resource_errors(config):  # out of memory / disk full: say what to change
            trainer = Trainer(
                config, resume=resume, overwrite=overwrite, show_progress=show_progress
            )
            return trainer.train()
    finally:
        dist_utils.shutdown()
