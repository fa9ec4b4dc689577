"""What happens around training without being training: the sample log and the run report.

A callback is told when training starts (after any resume), when a step ends (its batch and its record,
before evaluation and the metrics log) and when training ends. None of them draws a random number or
touches the weights, so a run is bit for bit the same with or without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.report.run_report import write_report_after_training
from mentor.report.samples import SampleLog, chosen_rows, is_logged_step, own_entries, sample_records
from mentor.rollout import RolloutBatch
from mentor.train.ledger import summary_table

if TYPE_CHECKING:
    from mentor.train.trainer import Algorithm, Trainer


class Callback:
    """The hooks the trainer calls; each does nothing unless a callback says otherwise. Every process calls
    them: a callback that writes files checks ``trainer.accelerator.is_main_process``."""

    def on_train_begin(self, trainer: Trainer, algorithm: Algorithm) -> None:
        """After the run directory is claimed and any checkpoint resumed (``trainer.step`` is the first step)."""

    def on_step_end(self, trainer: Trainer, algorithm: Algorithm, batch: RolloutBatch, record: dict) -> None:
        """After step ``trainer.step``'s update, with its batch and its record (evaluation not yet in it)."""

    def on_train_end(self, trainer: Trainer, algorithm: Algorithm) -> None:
        """After the last step (not after an interruption or a failure)."""


class SampleLogger(Callback):
    """A few of a step's sequences, token by token, to ``samples.jsonl`` (see mentor/report/samples.py), for
    an on-policy algorithm. ``teacher``: the in-process teacher the recipe trains against, asked for its
    preferred token at each position (one pass); any other teacher (a server, one per data set) is not asked."""

    def __init__(self, teacher=None):
        self.teacher = teacher

    def on_train_begin(self, trainer: Trainer, algorithm: Algorithm) -> None:
        if trainer.accelerator.is_main_process:  # the records past the step we start from go
            SampleLog(trainer.run.path).truncate(trainer.step)

    def on_step_end(self, trainer: Trainer, algorithm: Algorithm, batch: RolloutBatch, record: dict) -> None:
        cfg = trainer.config
        if (
            not trainer.accelerator.is_main_process
            or not algorithm.on_policy
            or cfg.sample_log_rows < 1
            or not is_logged_step(trainer.step, cfg.sample_log_every, cfg.steps)
        ):
            return
        rows = chosen_rows(len(batch), cfg.sample_log_rows)
        log = SampleLog(trainer.run.path)
        own_entries(trainer.run, log.path.name)
        log.append(sample_records(trainer.step, batch, trainer.tokenizer, rows, self.teacher))


class RunReport(Callback):
    """``summary.md`` (the FLOPs spent, then the curves) and ``report/*.png`` in the run directory."""

    def on_train_end(self, trainer: Trainer, algorithm: Algorithm) -> None:
        if not trainer.accelerator.is_main_process:
            return
        trainer.run.write_summary(
            f"# {algorithm.name}: {trainer.step} steps\n\nFLOPs spent (forward 2N, backward "
            f"4N per token; see mentor/evaluation/flops.py and mentor/train/ledger.py)\n\n"
            f"{summary_table(trainer.ledger.snapshot())}\n"
        )
        write_report_after_training(trainer.run.path)  # summary.md gains the curves; report/*.png


def standard_callbacks(teacher=None) -> list[Callback]:
    """Every run's callbacks: the sample log (with ``teacher``'s preferred tokens, if it is in-process) and the
    run report."""
    return [SampleLogger(teacher), RunReport()]
