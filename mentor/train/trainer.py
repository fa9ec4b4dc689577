"""The trainer: owns model, optimizer and schedule, and runs the one pipeline.

    for step: examples -> algorithm.collect (sample, score, weigh) -> update (loss, optimizer) -> log/save

Checkpoints and resume belong to its ``Checkpointer`` (mentor/train/checkpointer.py); the sample log and the
run report are callbacks (mentor/train/callbacks.py), which recipes give what they need (the teacher).

An algorithm says where tokens come from, how each is weighted and what its loss is (``mentor/algorithms``);
the update below (substeps, micro-batches, gradient sync, clipping, skipped steps, metrics) is the same for
all of them and knows none by name.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from mentor.config import TrainConfig, config_to_dict
from mentor.data.prompts import ExampleStream
from mentor.errors import MentorError
from mentor.models.loading import apply_lora, is_peft
from mentor.rollout import RolloutBatch
from mentor.train.callbacks import Callback, standard_callbacks
from mentor.train.checkpointer import Checkpointer
from mentor.train.fsdp import check_fsdp_request, gather_full_state, plain_model, prepare_for_sampling, root_gathered
from mentor.train.interrupt import StopOnSignal
from mentor.train.ledger import ComputeLedger
from mentor.train.progress import TrainingProgress
from mentor.train.run_dir import RunDirectory, load_weights, seed_everything
from mentor.update.logprobs import PolicyLogprobs, PolicyOutput, causal_lm_of
from mentor.update.metrics import Metric, MicroBatchMetrics, SubstepMetrics
from mentor.update.optim import make_optimizer, make_scheduler


class Algorithm(Protocol):
    """What the trainer runs: where the tokens come from and how they are weighed (``collect``), and the loss
    of a micro-batch given the policy forward's output (``loss``). The trainer knows no algorithm by name."""

    name: str
    on_policy: bool  # its tokens come from the policy: dropout off in the update, a sample log is kept

    def collect(self, examples: list) -> tuple[RolloutBatch, dict[str, float]]:
        """Sample (or read) tokens, score them and fill in per-token advantages."""

    def forward_options(self, micro: RolloutBatch) -> dict:
        """Keyword arguments of the policy forward (``PolicyLogprobs.forward``) on ``micro``: the temperature,
        whether to compute the entropy, a ``hidden_term`` (e.g. a full-vocabulary KL, or the KL to the teacher's
        top-k that ``micro`` carries) computed inside the forward."""

    def carries_signal(self, batch: RolloutBatch) -> bool:
        """Whether ``batch`` can move the weights (a loss token with a non-zero advantage or weight)."""

    def loss(self, output: PolicyOutput, micro: RolloutBatch, num_tokens: int) -> tuple[torch.Tensor, dict]:
        """The micro-batch's loss (a token sum divided by the step's ``num_tokens``) and its metrics: a plain
        number is summed over micro-batches and processes, then averaged over substeps; a ``Metric`` carries
        its own reduction (``Metric(value, reduce="max")``: the maximum; see mentor/update/metrics.py)."""


Evaluator = Callable[[nn.Module], dict]
_load_weights = load_weights  # a checkpoint's weights into the module (the Checkpointer's resume; tests use it)


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        tokenizer,
        stream: ExampleStream,
        evaluator: Evaluator | None = None,
        progress_keys: tuple[str, ...] = ("loss",),
        ledger: ComputeLedger | None = None,
        callbacks: list[Callback] | None = None,
    ):
        """``callbacks``: around training (default: the sample log, without a teacher, and the run report)."""
        from accelerate import Accelerator

        self.config, self.tokenizer, self.stream, self.evaluator = config, tokenizer, stream, evaluator
        self.progress_keys = progress_keys
        self.callbacks = standard_callbacks() if callbacks is None else callbacks
        self.ledger = ledger  # FLOPs of teacher/student; it measures the student after LoRA is applied below
        self.run = RunDirectory(config.output_dir)
        self.checkpointer = Checkpointer(self)
        trackers = [t.strip() for t in config.log_with.split(",") if t.strip()]
        # cpu=True on a machine without an accelerator lets torchrun/accelerate launch run gloo processes
        self.accelerator = Accelerator(
            log_with=trackers or None, project_dir=str(self.run.path), cpu=not torch.accelerator.is_available()
        )
        seed_everything(config.seed)
        if config.lora_rank > 0 and not is_peft(model):
            model = apply_lora(model, config.lora_rank, config.lora_alpha, config.lora_targets)
        self.model = model
        self.model.train()
        self.ledger = self.ledger or ComputeLedger()
        self.ledger.bind_student(model)
        optimizer = make_optimizer(
            model.parameters(), config.learning_rate, (config.adam_beta1, config.adam_beta2), config.weight_decay
        )
        self.scheduler = make_scheduler(
            optimizer, config.steps * config.num_substeps, config.lr_schedule, config.warmup_steps, config.min_lr_ratio
        )
        check_fsdp_request(self.accelerator)
        self.fsdp2 = self.accelerator.is_fsdp2  # parameters are DTensor shards (see mentor/train/fsdp.py)
        if self.fsdp2 and is_peft(model):
            raise MentorError(
                "LoRA under FSDP2 is not supported: train LoRA with DDP (examples/accelerate/ddp.yaml)"
                " or use --lora-rank 0 with FSDP2"
            )
        policy = PolicyLogprobs(model)
        # FSDP's transformer-based auto-wrap reads the prepared module's _no_split_modules: without it the
        # wrapper would be one FSDP unit, every parameter gathered at once (no memory saved over DDP)
        policy._no_split_modules = getattr(causal_lm_of(model), "_no_split_modules", None)
        self.policy, self.optimizer = self.accelerator.prepare(policy, optimizer)
        if self.fsdp2:
            prepare_for_sampling(self.policy, self.model, self.accelerator.device)
        self.world_size, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        if self.world_size > 1:
            if config.batch_size % self.world_size:
                raise MentorError(
                    f"--batch-size {config.batch_size} must be a multiple of the {self.world_size} "
                    "processes: each one samples an equal share of the prompts"
                )
            seed_everything(config.seed + self.rank)  # same weights everywhere, different samples per rank
        self.step = 0
        self.bad_steps_in_a_row = 0
        self.skipped_steps = 0
        self.skipped_zero_advantage_steps = 0  # updates skipped because no token carried a learning signal
        if trackers:
            flat = {k: v for k, v in config_to_dict(config).items() if isinstance(v, (int, float, str, bool))}
            self.accelerator.init_trackers(Path(config.output_dir).name, config=flat)

    # --- the loop ---------------------------------------------------------------------------------
    def train(self, algorithm: Algorithm) -> list[dict]:
        cfg = self.config
        history = self.checkpointer.start()  # claims the run directory, resumes from its latest checkpoint
        if history:
            self.ledger.restore(history[-1])
        self._call("on_train_begin", algorithm)
        if self.step == 0 and self.evaluator is not None:
            with self._sampling():
                record = {"step": 0, **self.evaluator(self.model)}
            self._log(record)
            history.append(record)
        with (
            TrainingProgress(
                cfg.steps,
                algorithm.name,
                self.progress_keys,
                enabled=not cfg.quiet and self.accelerator.is_main_process,
                completed=self.step,
                every=cfg.progress_every,
            ) as bar,
            StopOnSignal() as stop,
        ):
            while self.step < cfg.steps:
                record = self.train_step(algorithm)
                last = self.step == cfg.steps
                if self.evaluator is not None and (last or (cfg.eval_every and self.step % cfg.eval_every == 0)):
                    with self._sampling():
                        record.update(self.evaluator(self.model))
                self._log(record)
                history.append(record)
                bar.update(record)
                saved = self.checkpointer.due(last)
                if saved:
                    self.checkpointer.save()
                if self._all_reduce([float(stop.received or 0)], op="max")[0] and not last:
                    self.checkpointer.stop(stop, already_saved=saved)
        for tracker in self.accelerator.trackers:  # not end_training(): save_final still needs the process group
            tracker.finish()
        self._call("on_train_end", algorithm)
        return history

    def train_step(self, algorithm: Algorithm) -> dict:
        start = time.perf_counter()
        examples = self.stream.next_batch()[self.rank :: self.world_size]  # this process's share of the prompts
        with self._sampling():
            batch, metrics = algorithm.collect(examples)
        metrics = self._reduce_metrics(metrics)
        update_start = time.perf_counter()
        metrics.update(self.update(batch, algorithm))
        end = time.perf_counter()
        self.step += 1
        tokens = int(self._all_reduce([float(batch.attention_mask.sum())])[0])
        metrics.update(self.ledger.record_step(tokens, metrics, self.world_size))
        metrics.update(
            step=self.step,
            time_update=end - update_start,
            time_step=end - start,
            tokens=tokens,
            tokens_per_second=tokens / max(end - start, 1e-9),
            lr=self.scheduler.get_last_lr()[0],
            skipped_steps=self.skipped_steps,
            skipped_zero_advantage_steps=self.skipped_zero_advantage_steps,
        )
        self._call("on_step_end", algorithm, batch, metrics)
        if self.bad_steps_in_a_row >= self.config.max_bad_steps:
            raise MentorError(self.checkpointer.bad_steps_message(self.bad_steps_in_a_row))
        return metrics

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    # --- the update: identical for every algorithm --------------------------------------------------
    def update(self, batch: RolloutBatch, algorithm: Algorithm) -> dict[str, float]:
        # On-policy losses need the log-probs of the policy the sampler drew from, which ran in eval mode:
        # with dropout on, the importance ratio of a fresh sample would be noise, not 1. SFT keeps dropout.
        self.model.train(not algorithm.on_policy)
        try:
            return self._update(batch, algorithm)
        finally:
            self.model.train()

    def _update(self, batch: RolloutBatch, algorithm: Algorithm) -> dict[str, float]:
        substeps = list(torch.tensor_split(torch.arange(len(batch)), self.config.num_substeps))
        totals = SubstepMetrics(len(substeps), loss=0.0, entropy=0.0)
        for rows in substeps:
            minibatch = batch.select(rows)
            if not self._all_reduce([float(algorithm.carries_signal(minibatch))], op="max")[0]:
                # no token carries a non-zero advantage: the gradient is zero, yet an optimizer step would
                # still move the weights (Adam's moments, weight decay). Skip it, count it.
                self.skipped_zero_advantage_steps += 1
                continue
            # normalise by the loss tokens of ALL processes: the gradient equals a single-process run's
            num_tokens = max(int(self._all_reduce([float(minibatch.num_loss_tokens)])[0]), 1)
            self.optimizer.zero_grad(set_to_none=True)
            metrics = self._backward(minibatch, algorithm, num_tokens)
            grad_norm = self.accelerator.clip_grad_norm_(
                self.policy.parameters(), self.config.max_grad_norm or math.inf
            )
            grad_norm = float(grad_norm) if grad_norm is not None else 0.0  # DeepSpeed clips inside its step
            totals.name(metrics)
            if not (math.isfinite(metrics["loss"]) and math.isfinite(grad_norm)):
                # a NaN/inf would poison the weights and Adam's moments: skip the step, count it
                self.optimizer.zero_grad(set_to_none=True)
                self.skipped_steps += 1
                self.bad_steps_in_a_row += 1
                continue
            self.bad_steps_in_a_row = 0
            self.optimizer.step()
            self.scheduler.step()
            totals.add({**metrics, "grad_norm": Metric(grad_norm, reduce="max")})
        return {**totals.values, "grad_norm": totals.values.get("grad_norm", 0.0)}

    def _backward(self, minibatch: RolloutBatch, algorithm: Algorithm, num_tokens: int) -> dict[str, float]:
        """Forward and backward over ``minibatch``'s micro-batches (gradients all-reduced once, after the last);
        the loss, the entropy per loss token and the algorithm's metrics, over all processes."""
        sums = MicroBatchMetrics()
        micro_batches = torch.split(torch.arange(len(minibatch)), self.config.micro_batch_size)
        for index, rows in enumerate(micro_batches):
            micro = minibatch.select(rows).to(self.accelerator.device)
            last = index == len(micro_batches) - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(self.policy):
                # the forward computes what the algorithm asks for, inside the DDP/FSDP wrapper
                output = self.policy(
                    micro.input_ids,
                    micro.attention_mask,
                    positions=micro.loss_mask > 0,
                    **algorithm.forward_options(micro),
                )
                loss, metrics = algorithm.loss(output, micro, num_tokens)
                # DDP averages gradients over processes; scaling by their number turns that into a sum
                self.accelerator.backward(loss * self.world_size)
            entropy = 0.0 if output.entropy is None else float((output.entropy * micro.loss_mask).sum())
            sums.add({"loss": loss.item(), "entropy": entropy, **metrics})
        # loss metrics are normalised by the global token count, so their sum over processes is the total
        reduced = sums.over_processes(self._all_reduce)
        return {**reduced, "entropy": reduced["entropy"] / num_tokens}

    # --- multi-process: every rank holds a share of the batch ----------------------------------------
    def _sampling(self):
        """Around code that calls the inner model directly (sampling, evaluation): under FSDP2 the root's
        parameters are gathered for it."""
        return root_gathered(self.policy, self.fsdp2)

    def _all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        """Sum (or max) of per-process numbers; the numbers themselves when there is one process."""
        if self.world_size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        reduce_op = torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
        torch.distributed.all_reduce(tensor, op=reduce_op)
        return tensor.tolist()

    def _reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Per-process sampling metrics -> one record: a ``Metric`` as it says; a plain number is a mean over
        processes, except a time (``time_*``), which is the slowest rank's."""
        if self.world_size == 1:
            return metrics
        names = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
        how = {k: getattr(metrics[k], "reduce", "max" if k.startswith("time_") else "mean") for k in names}
        maxed = [k for k in names if how[k] == "max"]
        added = [k for k in names if how[k] != "max"]
        reduced = dict(metrics)
        reduced.update(zip(maxed, self._all_reduce([float(metrics[k]) for k in maxed], op="max")))
        sums = self._all_reduce([float(metrics[k]) for k in added])
        reduced.update({k: v / self.world_size if how[k] == "mean" else v for k, v in zip(added, sums)})
        return reduced

    # --- the metrics log, the state a checkpoint keeps, the trained model ----------------------------------
    def _log(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            self.run.append_metrics(record)
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.accelerator.trackers:
            self.accelerator.log(scalars, step=record["step"])

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the trainer beyond weights, optimizer, schedule and RNG (the checkpointer
        adds those and the step): the data stream's position and the skipped-step counters."""
        return {
            "stream": self.stream.state_dict(),
            "skipped_steps": self.skipped_steps,
            "bad_steps_in_a_row": self.bad_steps_in_a_row,
            "skipped_zero_advantage_steps": self.skipped_zero_advantage_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state["stream"])
        self.step, self.skipped_steps = state["step"], state.get("skipped_steps", 0)
        self.bad_steps_in_a_row = state.get("bad_steps_in_a_row", 0)
        self.skipped_zero_advantage_steps = state.get("skipped_zero_advantage_steps", 0)

    def full_weights(self) -> tuple[nn.Module | None, dict | None]:
        """The trained model with full tensors and the optimizer's state dict, on the main process (None
        elsewhere). Under FSDP2 the shards are gathered, so every rank must call it."""
        model = self.accelerator.unwrap_model(self.policy).model
        if not self.fsdp2:
            return (model, self.optimizer.state_dict()) if self.accelerator.is_main_process else (None, None)
        weights, optimizer_state = gather_full_state(model, self.policy, self.optimizer.optimizer)
        if not self.accelerator.is_main_process:
            return None, None
        return plain_model(model, weights), optimizer_state

    def save_checkpoint(self) -> Path | None:
        return self.checkpointer.save()

    def save_final(self, path: str | Path | None = None) -> Path:
        """The trained model, loadable by ``AutoModelForCausalLM.from_pretrained`` (LoRA merged)."""
        return self.checkpointer.save_final(path)
