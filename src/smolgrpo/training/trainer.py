"""The GRPO training loop: rollout -> reward -> advantage -> loss -> step -> log -> checkpoint.

Run it with `smolgrpo train --config recipes/cpu-smoke.yaml`, or under
`torchrun --nproc_per_node N smolgrpo train ...` for several GPUs (or CPU processes with gloo).

How it departs from DeepSeekMath's GRPO (each is a config switch, see config/schema.py):
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

import random
import time
import weakref
from contextlib import nullcontext
from pathlib import Path

import torch

from smolgrpo.config.schema import Config
from smolgrpo.errors import warn
from smolgrpo.generation.tools import build_tools
from smolgrpo.models import distributed as dist_utils
from smolgrpo.models import fsdp
from smolgrpo.runs import guards
from smolgrpo.runs.checkpoint import list_checkpoints
from smolgrpo.runs.interrupts import StopRequested, StopSignal, restore_rng, rng_snapshot
from smolgrpo.tasks import build_task, load_train_problems
from smolgrpo.tasks.data import Problem
from smolgrpo.tasks.prompts import select_few_shot
from smolgrpo.training.batching import GroupBatch, PromptStream, build_group_batch
from smolgrpo.training.group_collection import CollectedGroups, collect_groups
from smolgrpo.training.periodic_eval import periodic_eval
from smolgrpo.training.policy_update import train_on_batch
from smolgrpo.training.resume import check_recorded_config, resume_from_checkpoint, write_checkpoint


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
        from smolgrpo.training.run_setup import check_training_dtype, open_run_folder

        self.config = config
        self.show_progress = show_progress
        self.rank, self.world_size = dist_utils.init()
        self.is_main = self.rank == 0
        self.sharded = fsdp.enabled(config, self.world_size, self.is_main)  # FSDP2
        self.run_dir = Path(config.run.output_dir)
        check_training_dtype(config)  # before the run folder is made
        # The run folder is checked and locked (rank 0) before anything loads; an old run that
        # --overwrite replaces is deleted only once the model and data have loaded, and the run
        # files are written then (after the checkpoint has loaded, on --resume).
        self.run_folder = None
        if self.is_main:
            self.run_folder = open_run_folder(self.run_dir, config, resume, overwrite)
            # Given back by `train`, or when this trainer is garbage (a trainer never trained).
            weakref.finalize(self, self.run_folder.lock.release)
        try:
            if self.is_main and resume:
                check_recorded_config(self)  # before the model loads (resume.py)
            self._set_up(config, resume, model, tokenizer, train_problems, eval_problems)
        except BaseException:
            self.release_run_folder(failed=True)
            raise

    def _set_up(self, config, resume, model, tokenizer, train_problems, eval_problems) -> None:
        from smolgrpo.training.run_setup import TimeShare, build_optimizer, write_run_files

        dist_utils.barrier()
        self._load_model(config, model, tokenizer)
        self.template, self.task = config.prompt.template(), build_task(config.data)
        self.train_problems = (
            train_problems
            if train_problems is not None
            else load_train_problems(self.task, config.data)
        )
        self.eval_problems = eval_problems
        if self.is_main and not resume:  # the model and the data have loaded
            self.run_folder.replace()
            write_run_files(self.run_dir, config)
        self.few_shot = select_few_shot(
            self.train_problems, config.prompt.num_few_shot, config.run.seed
        )
        self.stream = PromptStream(self.train_problems, config.run.seed)
        # The calculator and the other tools of sampling.tools (tools.py), or None.
        self.tools = build_tools(self.tokenizer, config.sampling)
        self.time_share = TimeShare()  # of run.time_limit_s, for a time-length schedule
        self.optimizer, self.scheduler = build_optimizer(self.model, config, self.time_share)
        self.step = 0
        self.train_time_s = 0.0  # training time of earlier invocations (restored on resume)
        self.clock_start: float | None = None  # monotonic start of this invocation's training
        self.saved_step: int | None = None  # the step of the newest checkpoint this run wrote
        self.stop_signal = StopSignal(
            config.run.stop_grace_s, describe=self._newest_checkpoint, announce=self.is_main
        )
        self.eval_cut_short = False
        self.stopped_by_time_limit = False  # run.time_limit_s ended the run before max_steps
        self.progress = None  # the running loop's TrainProgress, told each step's phase
        self.bad_steps_in_a_row = 0  # NaN/inf steps skipped in a row (guards.py)
        if resume:
            resume_from_checkpoint(self)  # resume.py
            if self.is_main:  # only now that the checkpoint has loaded
                write_run_files(self.run_dir, config)

    def _load_model(self, config: Config, model, tokenizer) -> None:
        """The policy (broadcast from rank 0, then sharded under FSDP) and, for the KL term,
        a frozen reference copy."""
        from smolgrpo.training.run_setup import frozen_copy, setup_model

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

    def release_run_folder(self, failed: bool = False) -> None:
        """Give back the run folder's lock (at the end of `train`, or when set-up fails)."""
        folder, self.run_folder = getattr(self, "run_folder", None), None
        if folder is not None:
            folder.release(failed=failed)

    # ------------------------------------------------------------------ stop
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
    def collect_groups(self) -> CollectedGroups:
        """Rollouts, rewards and advantages for this step (group_collection.py)."""
        return collect_groups(self)

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def train_on_batch(self, batch: GroupBatch | None) -> dict:
        """num_iterations optimizer steps on one generation batch (policy_update.py)."""
        return train_on_batch(self, batch)

    def train_step(self) -> dict:
        step_started = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        groups = self.collect_groups()
        self.phase("training")
        backward_started = time.perf_counter()
        # Decided globally: a rank that kept no group must still join the other ranks' update.
        if dist_utils.any_true(bool(groups.rollouts)):
            batch = None
            if groups.rollouts:
                batch = build_group_batch(
                    groups.rollouts,
                    groups.advantages,
                    self.tokenizer.pad_token_id,
                    self.config.grpo.mask_truncated_completions,
                )
            losses = self.train_on_batch(batch)
        else:  # every group was uninformative: no update, but the step still counts
            losses = dict.fromkeys(("loss", "clip_fraction", "kl", "grad_norm", "entropy"), 0.0)
            if self.is_main:
                warn(f"step {self.step + 1}: all groups had equal rewards; no update")
            for _ in range(self.config.grpo.num_iterations):  # keep the LR schedule on time
                guards.step_schedule(self.scheduler)
        self.step += 1
        from smolgrpo.training.step_metrics import step_metrics

        return step_metrics(
            self,
            groups,
            losses,
            timings={
                "step_s": time.perf_counter() - step_started,
                "train_s": time.perf_counter() - backward_started,
            },
        )

    # ------------------------------------------------------------------ the loop
    def train(self) -> Path | None:
        """The training loop; the run folder's lock is given back when it ends, however."""
        try:
            return self._train()
        finally:
            self.release_run_folder()

    def _train(self) -> Path | None:
        from smolgrpo.runs.metrics_log import MetricsLogger
        from smolgrpo.runs.progress import TrainProgress

        config = self.config
        logger = MetricsLogger(self.run_dir, enabled=self.is_main, config=config)  # + trackers
        self.progress = progress = TrainProgress(
            config.optim.max_steps,
            self.step,
            enabled=self.is_main and self.show_progress,
            label=getattr(self, "stage", "train"),
        )
        budget = config.run.time_limit_s
        self.clock_start = time.monotonic()
        deadline = self.clock_start + budget - self.train_time_s if budget else None
        with self.stop_signal, progress, logger:  # signal handlers while training; trackers
            while self.step < config.optim.max_steps:
                iteration_started = time.monotonic()
                if config.optim.schedule_length == "time":  # validated: a time limit is set
                    self._refresh_time_share()
                step_start = self._step_start_state()
                try:
                    metrics, samples = self.train_step()
                except StopRequested:  # nothing of the step was applied: put back its start
                    self._restore_step_start(step_start)
                    return self._stop(cut_short=True)
                self._record_step(metrics, samples, logger)
                stop = dist_utils.any_true(self.stop_signal.requested)  # all ranks stop together
                # Another step would run past the time limit (the last one's time as its
                # estimate): end here as at max_steps. All ranks decide together.
                out_of_time = deadline is not None and dist_utils.any_true(
                    2 * time.monotonic() - iteration_started > deadline
                )
                if (
                    self.step % config.run.save_every == 0
                    or self.step == config.optim.max_steps
                    or out_of_time
                ):
                    self.save_checkpoint()
                if stop:
                    return self._stop(cut_short=False)
                if out_of_time and self.step < config.optim.max_steps:
                    self._stop_at_time_limit()
                    break
        return self._save_final_model()

    def _refresh_time_share(self) -> None:
        """A time-length schedule: the learning rate for the share of run.time_limit_s used."""
        from smolgrpo.training.run_setup import refresh_learning_rate

        used = self.training_time_s() / self.config.run.time_limit_s  # the same on all ranks
        self.time_share.fraction = dist_utils.all_sum(used) / self.world_size
        refresh_learning_rate(self.scheduler)

    def _record_step(self, metrics: dict, samples: list, logger) -> None:
        """Periodic eval, the metrics row (and samples), the progress bar, the NaN streak."""
        config = self.config
        if config.run.eval_every and self.step % config.run.eval_every == 0:
            metrics.update(self.periodic_eval())
        logger.log(
            metrics,
            samples if self.step % config.run.log_samples_every == 0 or self.step == 1 else None,
        )
        self.progress.update(metrics)
        # Raises before any checkpoint of a diverged run can replace a good one.
        self.bad_steps_in_a_row = guards.count_bad_steps(
            self.bad_steps_in_a_row, metrics, config.optim.max_bad_steps, self.run_dir
        )

    def _stop_at_time_limit(self) -> None:
        self.stopped_by_time_limit = True
        if self.is_main:
            print(
                f"run.time_limit_s ({self.config.run.time_limit_s:g} s) reached: "
                f"stopping after step {self.step} of {self.config.optim.max_steps}",
                flush=True,
            )

    def _save_final_model(self) -> Path | None:
        """The `final/` folder (rank 0; gathered from all ranks' shards under FSDP)."""
        from smolgrpo.training.run_setup import save_final_model

        final = None
        full_state = fsdp.full_state_dict(self.model) if self.sharded else None  # collective
        if self.is_main:
            final = save_final_model(self, full_state)
        dist_utils.barrier()
        return final

    def training_time_s(self) -> float:
        """Seconds of training so far, earlier invocations of a resumed run included."""
        if self.clock_start is None:
            return self.train_time_s
        return self.train_time_s + time.monotonic() - self.clock_start

    def phase(self, name: str) -> None:
        """Show what the step is doing now (generating, scoring, ...) in the progress bar."""
        if self.progress is not None:
            self.progress.phase(name)

    def save_checkpoint(self) -> None:
        """Checkpoint this step (resume.py)."""
        write_checkpoint(self)

    def periodic_eval(self) -> dict:
        """The `eval/` metrics of run.eval_every (periodic_eval.py)."""
        return periodic_eval(self)


def run_training(
    config: Config,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
    trainer_class: type[Trainer] = Trainer,
) -> Path | None:
    """Train with `trainer_class` (Trainer for GRPO, sft.SFTTrainer for supervised) and shut
    the process group down; out-of-memory and disk-full errors become one-line user errors."""
    try:
        with guards.resource_errors(config):  # out of memory / disk full: say what to change
            trainer = trainer_class(
                config, resume=resume, overwrite=overwrite, show_progress=show_progress
            )
            return trainer.train()
    finally:
        dist_utils.shutdown()
