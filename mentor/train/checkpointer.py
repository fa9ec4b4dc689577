"""Checkpoints of a run: claim its directory, resume from the latest checkpoint, save every ``--save-every``
steps (keeping ``--keep-checkpoints``), save on a stop signal, and write the final model.

The trainer's weights, optimizer, schedule and RNG go to ``run_dir.RunDirectory``; the trainer's own
counters and the data stream's position come from ``Trainer.state_dict``. A resumed run continues bit for
bit as the uninterrupted one would have (tests/test_resume.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import load_file

from mentor.errors import MentorError
from mentor.train.fsdp import load_full_state
from mentor.train.interrupt import StopOnSignal, TrainingInterrupted
from mentor.train.run_dir import WEIGHTS_FILE, check_finite_weights, load_trainer_state, load_weights, set_rng_state

if TYPE_CHECKING:
    from mentor.train.trainer import Trainer


class Checkpointer:
    def __init__(self, trainer: Trainer):
        self.trainer, self.run, self.config = trainer, trainer.run, trainer.config

    def start(self) -> list[dict]:
        """Claim the run directory (the main process first; the others then find it in place), resume from its
        latest checkpoint if there is one; the metrics records up to the step training starts from."""
        accelerator = self.trainer.accelerator
        if accelerator.is_main_process:
            self.run.claim(self.config, self.config.overwrite, self.config.resume)
        accelerator.wait_for_everyone()
        if self.run.latest_checkpoint() is not None:
            self.resume()
        return self.run.read_metrics()

    def due(self, last: bool) -> bool:
        every = self.config.save_every
        return bool(every and (self.trainer.step % every == 0 or last))

    def save(self) -> Path | None:
        """A checkpoint of the current step (every rank calls it; the main process writes it)."""
        trainer = self.trainer
        trainer.accelerator.wait_for_everyone()
        model, optimizer_state = trainer.full_weights()
        if not trainer.accelerator.is_main_process:
            return None
        return self.run.save_checkpoint(
            trainer.step,
            model,
            trainer.optimizer,
            trainer.scheduler,
            trainer.state_dict(),
            self.config.keep_checkpoints,
            optimizer_state=optimizer_state,
        )

    def resume(self) -> None:
        trainer = self.trainer
        checkpoint = self.run.latest_checkpoint()
        state = load_trainer_state(checkpoint)
        if trainer.fsdp2:  # every rank reads the full tensors and keeps its shards
            load_full_state(
                trainer.model,
                trainer.policy,
                trainer.optimizer.optimizer,
                load_file(checkpoint / "model" / WEIGHTS_FILE),
                state["optimizer"],
            )
        else:
            load_weights(trainer.model, checkpoint / "model")  # the module's own state_dict, as save wrote it
            trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.load_state_dict(state)  # the step, its counters and the data stream's position
        set_rng_state(state["rng"])
        if trainer.accelerator.is_main_process:  # one writer: ranks rewriting the same file race on its temporary
            self.run.truncate_metrics(trainer.step)
        trainer.accelerator.wait_for_everyone()  # the others read the metrics only once they are cut

    def stop(self, stop: StopOnSignal, already_saved: bool) -> None:
        """A stop signal between steps: a checkpoint of this step (unless one was just written), then stop."""
        if not already_saved:
            self.save()
        raise TrainingInterrupted(
            f"interrupted by {stop.name or 'a signal'} at step {self.trainer.step}/"
            f"{self.config.steps}; checkpoint saved in {self.run.checkpoints}: run the same "
            "command again (or add --resume) to continue",
            stop.received or 15,
        )

    def bad_steps_message(self, in_a_row: int) -> str:
        kept = (
            "the last checkpoint is intact"
            if self.run.latest_checkpoint() is not None
            else "no checkpoint was written: --save-every N keeps one"
        )
        return (
            f"{in_a_row} steps in a row had a non-finite loss or gradient; stopped ({kept}): lower "
            "--learning-rate or check the data"
        )

    def save_final(self, path: str | Path | None = None) -> Path:
        """The trained model, loadable by ``AutoModelForCausalLM.from_pretrained`` (LoRA merged)."""
        trainer = self.trainer
        path = Path(path or self.run.path / "final")
        if trainer.step and trainer.skipped_steps >= trainer.step * self.config.num_substeps:
            raise MentorError(
                f"every update of the {trainer.step} steps had a non-finite loss or gradient, so the "
                "weights never changed and no final model was written: lower --learning-rate or "
                "check the data"
            )
        check_finite_weights(trainer.accelerator.unwrap_model(trainer.policy).model)  # every rank: all stop together
        model, _ = trainer.full_weights()
        if trainer.accelerator.is_main_process:  # atomic: a temporary directory renamed into place
            self.run.save_final(model, trainer.tokenizer, path)
        trainer.accelerator.wait_for_everyone()
        return path
