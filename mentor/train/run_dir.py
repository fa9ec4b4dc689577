"""A run directory: resolved config, metrics.jsonl, atomic checkpoints, the final model, a summary.

It is enough to resume, evaluate or compare a run. Checkpoints are written to a temporary directory and
renamed into place, so a crash mid-write never leaves a checkpoint that looks complete.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from mentor.config import NON_SEMANTIC_FIELDS, config_to_dict
from mentor.errors import MentorError
from mentor.models.loading import is_peft

CHECKPOINT_PREFIX = "step_"
WEIGHTS_FILE = "model.safetensors"  # a checkpoint's weights, in checkpoints/step_N/model/


class RunDirectory:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"

    # --- config ---------------------------------------------------------------------------------
    def claim(self, config, overwrite: bool = False, resume: bool = False) -> bool:
        """Write the config, or check it matches the one already there. Returns True if there is a
        checkpoint to resume from. Every check runs before anything is written."""
        resolved = config_to_dict(config)
        config_file = self.path / "config.yaml"
        changed = []
        if config_file.exists():
            previous = yaml.safe_load(config_file.read_text()) or {}
            changed = sorted(k for k in set(previous) | set(resolved)
                             if k not in NON_SEMANTIC_FIELDS and previous.get(k) != resolved.get(k))
            if changed and not overwrite:
                raise MentorError(f"run directory {self.path} belongs to a different config (differs in "
                                  f"{', '.join(changed[:4])}): choose another --output-dir or pass --overwrite")
        if resume and (changed or self.latest_checkpoint() is None):
            raise MentorError(f"--resume: {self.path} holds no checkpoint to resume from: drop --resume to start "
                              "the run (or pass the --output-dir of the run to continue)")
        if changed:
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(config_file, yaml.safe_dump(resolved, sort_keys=True))
        self._remove_partial_checkpoints()
        if self.latest_checkpoint() is None:
            self.truncate_metrics(-1)  # a run killed before its first checkpoint starts over from step 0
            return False
        return True

    # --- metrics ----------------------------------------------------------------------------------
    def append_metrics(self, record: dict) -> None:
        with (self.path / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        file = self.path / "metrics.jsonl"
        if not file.exists():
            return []
        records = []
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a kill mid-write; resuming rewrites it
        return records

    def truncate_metrics(self, last_step: int) -> None:
        """Drop records past a checkpoint we resume from (they will be recomputed identically)."""
        file = self.path / "metrics.jsonl"
        if not file.exists():
            return
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= last_step]
        _atomic_write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))

    # --- checkpoints ------------------------------------------------------------------------------
    def latest_checkpoint(self) -> Path | None:
        if not self.checkpoints.exists():
            return None
        done = sorted(p for p in self.checkpoints.iterdir()
                      if p.name.startswith(CHECKPOINT_PREFIX) and (p / "COMPLETE").exists())
        return done[-1] if done else None

    def save_checkpoint(self, step: int, model, optimizer, scheduler, extra_state: dict, keep: int) -> Path:
        final = self.checkpoints / f"{CHECKPOINT_PREFIX}{step:08d}"
        tmp = self.checkpoints / f".tmp-{CHECKPOINT_PREFIX}{step:08d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            save_weights(model, tmp / "model")
            state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "rng": rng_state(), **extra_state}
            torch.save(state, tmp / "trainer_state.pt")
            for file in tmp.rglob("*"):  # on disk before the rename makes the checkpoint visible
                if file.is_file():
                    _fsync_file(file)
            (tmp / "COMPLETE").write_text(str(step))
            _fsync_dir(tmp)
        except (OSError, RuntimeError, SafetensorError) as exc:  # torch and safetensors wrap failed writes
            shutil.rmtree(tmp, ignore_errors=True)
            reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1]
            raise MentorError(f"could not write checkpoint {final} ({reason}): free disk space and run the same "
                              "command again to resume (the previous checkpoint is intact)") from None
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(self.checkpoints)
        self._prune(keep)
        return final

    def _remove_partial_checkpoints(self) -> None:
        """Temporary directories of checkpoints whose writing was cut short: never resumed from."""
        if self.checkpoints.exists():
            for partial in self.checkpoints.glob(f".tmp-{CHECKPOINT_PREFIX}*"):
                shutil.rmtree(partial, ignore_errors=True)

    def _prune(self, keep: int) -> None:
        done = sorted(p for p in self.checkpoints.iterdir() if p.name.startswith(CHECKPOINT_PREFIX))
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def write_summary(self, text: str) -> None:
        _atomic_write_text(self.path / "summary.md", text)


def save_weights(model, directory: Path) -> None:
    """A checkpoint's weights: the module's own ``state_dict()``, names and layouts as this process holds them.

    Not ``save_pretrained``: transformers 5 rewrites keys on the way to disk (the fused experts of Qwen3-MoE
    and Mixtral are split per expert, GPT-NeoX's ``lm_head`` becomes ``embed_out``), which ``from_pretrained``
    undoes but ``load_state_dict`` cannot. Only mentor reads a checkpoint; ``final/`` is saved for
    transformers and vLLM. Tied tensors are written once. A LoRA model writes its trainable tensors only:
    resuming rebuilds the frozen base from the model the run started from.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if is_peft(model):
        trainable = {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}
        save_file(trainable, directory / WEIGHTS_FILE, metadata={"format": "pt"})
    else:
        save_model(model, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})


def load_weights(model, directory: Path) -> None:
    """Put back exactly what ``save_weights`` wrote: every tensor it expects, none it does not know."""
    file = directory / WEIGHTS_FILE
    legacy_adapter = directory / "adapter_model.safetensors"  # LoRA checkpoints of earlier mentor versions
    if is_peft(model) and not file.exists() and legacy_adapter.exists():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(legacy_adapter))
        return
    try:
        if is_peft(model):
            state = load_file(file)
            expected = {name for name, p in model.named_parameters() if p.requires_grad}
            missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
            if not missing and not unexpected:
                model.load_state_dict(state, strict=False)
        else:
            missing, unexpected = load_model(model, file, strict=False)
    except (OSError, SafetensorError) as exc:
        reason = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MentorError(f"checkpoint {directory} cannot be read ({reason}): remove it to resume from the one "
                          "before, or start a fresh --output-dir") from None
    except RuntimeError as exc:  # load_state_dict: a tensor of another shape
        detail = str(exc).strip().splitlines()[-1].strip().rstrip(".")
    else:
        if not missing and not unexpected:
            return
        detail = (f"{len(missing)} tensors missing, {len(unexpected)} unexpected, "
                  f"e.g. {(sorted(missing) or sorted(unexpected))[0]}")
    raise MentorError(f"checkpoint {directory} does not fit this model ({detail}): resume with the same model "
                      "and LoRA settings, or start a fresh --output-dir")


def load_trainer_state(checkpoint: Path) -> dict:
    return torch.load(checkpoint / "trainer_state.pt", map_location="cpu", weights_only=False)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
