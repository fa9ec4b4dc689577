"""A run directory: resolved config, metrics.jsonl, atomic checkpoints, the final model, a summary.

It is enough to resume, evaluate or compare a run. Checkpoints and ``final/`` are written to a temporary
directory and renamed into place, so a crash mid-write never leaves one that looks complete.

Ownership: mentor deletes only what it wrote. The names of the entries it writes at the top of the directory
are recorded in ``.mentor-files`` before they are written; ``--overwrite`` removes those and nothing else.
A directory that is neither empty nor a mentor run is refused, and so is a run that would replace one of
its own inputs (a ``--student`` inside ``final/``). Every check runs before anything is written
(``check``, which the recipes call before they load a model).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from mentor.config import NON_SEMANTIC_FIELDS, config_to_dict
from mentor.errors import MentorError
from mentor.files import is_url
from mentor.models.loading import is_peft

CHECKPOINT_PREFIX = "step_"
WEIGHTS_FILE = "model.safetensors"  # a checkpoint's weights, in checkpoints/step_N/model/


MANIFEST = ".mentor-files"  # the top-level entries mentor wrote (JSON list); the only ones it may delete
# what a run writes at the top of its directory: claimed (recorded) before any of them is written
RUN_ENTRIES = (
    "config.yaml",
    "metrics.jsonl",
    "checkpoints",
    "final",
    "summary.md",
    "teacher_samples.jsonl",
    "eval.jsonl",
    "eval_samples.jsonl",
)
# config fields that name something the run reads (a path, or name=path,name=path)
INPUT_FIELDS = (
    "student",
    "teacher",
    "prompts",
    "data",
    "model",
    "reference",
    "from_teacher",
    "base",
    "teacher_tokenizer",
    "labeler_model",
)


class RunDirectory:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"

    # --- config ---------------------------------------------------------------------------------
    def check(self, config, overwrite: bool = False, resume: bool = False) -> list[str]:
        """Every check ``claim`` makes, writing nothing: the recipes call it before any work starts.

        Returns the semantic config fields that differ from the run already there (empty: a new run or the
        same one, to resume)."""
        path = self.path
        self._check_writable()
        entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        if entries and not self.is_mentor_run():
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise MentorError(
                f"--output-dir {path} is not empty and is not a mentor run (it holds {shown}): "
                "choose a new or empty directory (mentor never deletes or mixes with files it did "
                "not write)"
            )
        changed = self._changed_fields(config, overwrite)
        if changed and not overwrite:
            raise MentorError(
                f"run directory {path} belongs to a different config (differs in "
                f"{', '.join(changed[:4])}): choose another --output-dir or pass --overwrite"
            )
        if resume and (changed or self.latest_checkpoint() is None):
            raise MentorError(
                f"--resume: {path} holds no checkpoint to resume from: drop --resume to start "
                "the run (or pass the --output-dir of the run to continue)"
            )
        self._check_inputs(config, replacing=self.owned() if changed else {"final", "checkpoints"})
        return changed

    def claim(self, config, overwrite: bool = False, resume: bool = False) -> bool:
        """Write the config, or check it matches the one already there. Returns True if there is a
        checkpoint to resume from. Every check runs before anything is written."""
        changed = self.check(config, overwrite, resume)
        try:
            if changed:  # --overwrite: what mentor wrote here goes, nothing else
                self._remove_owned()
            self.path.mkdir(parents=True, exist_ok=True)
            trackers = [Path(config.output_dir).name] if getattr(config, "log_with", "") else []
            self.own(*RUN_ENTRIES, *[t for t in trackers if t])
            _atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=True))
            self._remove_partial_checkpoints()
            if self.latest_checkpoint() is None:
                self.truncate_metrics(-1)  # a run killed before its first checkpoint starts over from step 0
                return False
        except OSError as exc:
            raise MentorError(
                f"cannot write the run directory {self.path} ({exc.strerror or exc}): choose a "
                "writable --output-dir with free space"
            ) from None
        return True

    def claim_entries(self, *names: str, flag: str = "--output-dir") -> None:
        """For commands that write several named things into one directory (the demo, CoE's steps): it must
        be new, empty or mentor's; the names are recorded as mentor's before any is written."""
        self._check_writable(flag)
        entries = sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []
        if entries and not (self.path / MANIFEST).is_file():
            # written by an earlier mentor (no record yet): only the names this command writes, one a run of it
            earlier = not set(entries) - set(names) and any(
                RunDirectory(self.path / e).is_mentor_run()
                or any(RunDirectory(sub).is_mentor_run() for sub in (self.path / e).iterdir())
                for e in entries
                if (self.path / e).is_dir()
            )
            if not earlier:
                shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
                raise MentorError(
                    f"{flag} {self.path} is not empty and was not written by mentor (it holds "
                    f"{shown}): choose a new or empty directory"
                )
        try:
            self.own(*names)
        except OSError as exc:
            raise MentorError(
                f"cannot write to {self.path} ({exc.strerror or exc}): choose a writable {flag}"
            ) from None

    def _check_writable(self, flag: str = "--output-dir") -> None:
        path = self.path
        if path.exists() and not path.is_dir():
            raise MentorError(f"{flag} {path} is a file, not a directory: choose a directory for the run")
        existing = next(p for p in (path, *path.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise MentorError(f"{flag} {path} cannot be created: {existing} is a file")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise MentorError(
                f"{flag} {path} is not writable ({existing} is read-only): choose a directory you can write to"
            )
        if existing != path.absolute():
            _probe_mkdir(existing, path)

    def is_mentor_run(self) -> bool:
        """Written by mentor: it has the ownership record, or (runs of earlier versions) a mentor config."""
        return (self.path / MANIFEST).is_file() or self._legacy_config() is not None

    def owned(self) -> set[str]:
        """The top-level entries mentor wrote here (and so may delete or replace)."""
        try:
            names = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            names = list(RUN_ENTRIES) if self._legacy_config() is not None else []
        if not isinstance(names, list):
            names = []
        # plain names only: a record edited to say "../x" or "a/b" must not reach outside the directory
        return {
            n
            for n in names
            if isinstance(n, str) and n not in ("", ".", "..", MANIFEST) and "/" not in n and os.sep not in n
        }

    def own(self, *names: str) -> None:
        """Record entries as mentor's before writing them (a crash mid-write leaves them deletable)."""
        names_now = self.owned() if (self.path / MANIFEST).exists() else set()
        if set(names) <= names_now:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(self.path / MANIFEST, json.dumps(sorted(names_now | set(names))) + "\n")

    def _legacy_config(self) -> dict | None:
        file = self.path / "config.yaml"
        try:
            values = yaml.safe_load(file.read_text(encoding="utf-8")) if file.is_file() else None
        except (OSError, ValueError, yaml.YAMLError):
            return None
        return values if isinstance(values, dict) and {"output_dir", "steps", "seed"} <= set(values) else None

    def _changed_fields(self, config, overwrite: bool) -> list[str]:
        file = self.path / "config.yaml"
        if not file.exists():
            return []
        try:
            previous = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            previous = exc
        if not isinstance(previous, dict):
            if overwrite:
                return ["config.yaml (unreadable)"]
            reason = (
                (str(previous).splitlines() or ["not a mapping"])[0]
                if isinstance(previous, Exception)
                else "not a mapping"
            )
            raise MentorError(
                f"run directory {self.path} holds a config.yaml mentor cannot read ({reason[:80]}): "
                "choose another --output-dir, or pass --overwrite to replace the files mentor wrote"
            )
        resolved = config_to_dict(config)
        return sorted(
            k
            for k in set(previous) | set(resolved)
            if k not in NON_SEMANTIC_FIELDS and previous.get(k) != resolved.get(k)
        )

    def _check_inputs(self, config, replacing: set[str]) -> None:
        """Refuse a run that would delete or replace a file it reads (``--student RUN/final --overwrite``)."""
        at_risk = [(self.path / name).resolve() for name in sorted(replacing) if (self.path / name).exists()]
        if not at_risk:
            return
        for name in INPUT_FIELDS:
            for value in _named_paths(getattr(config, name, "")):
                source = Path(value).expanduser()
                if not source.exists():
                    continue
                source = source.resolve()
                for entry in at_risk:
                    if source == entry or entry in source.parents:
                        raise MentorError(
                            f"--{name.replace('_', '-')} {value} lies inside {entry}, which this run "
                            "would replace: copy it out of the run directory or choose another "
                            "--output-dir"
                        )

    def _remove_owned(self) -> None:
        for name in sorted(self.owned()):
            entry = self.path / name
            if entry.is_symlink() or entry.is_file():
                entry.unlink()  # a link is removed, never followed
            elif entry.is_dir():
                shutil.rmtree(entry)

    # --- metrics ----------------------------------------------------------------------------------
    def append_metrics(self, record: dict) -> None:
        with (self.path / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        return read_records(self.path / "metrics.jsonl")

    def truncate_metrics(self, last_step: int) -> None:
        """Drop records past a checkpoint we resume from (they will be recomputed identically)."""
        truncate_records(self.path / "metrics.jsonl", last_step)

    # --- checkpoints ------------------------------------------------------------------------------
    def latest_checkpoint(self) -> Path | None:
        if not self.checkpoints.exists():
            return None
        done = sorted(
            p for p in self.checkpoints.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and (p / "COMPLETE").exists()
        )
        return done[-1] if done else None

    def save_checkpoint(
        self, step: int, model, optimizer, scheduler, extra_state: dict, keep: int, optimizer_state: dict | None = None
    ) -> Path:
        """``optimizer_state``, when given, is saved instead of ``optimizer.state_dict()`` (under FSDP2 the trainer
        gathers the full one from the shards)."""
        final = self.checkpoints / f"{CHECKPOINT_PREFIX}{step:08d}"
        tmp = self.checkpoints / f".tmp-{CHECKPOINT_PREFIX}{step:08d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            save_weights(model, tmp / "model")
            optimizer_state = optimizer.state_dict() if optimizer_state is None else optimizer_state
            state = {
                "step": step,
                "optimizer": optimizer_state,
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                **extra_state,
            }
            torch.save(state, tmp / "trainer_state.pt")
            for file in tmp.rglob("*"):  # on disk before the rename makes the checkpoint visible
                if file.is_file():
                    _fsync_file(file)
            (tmp / "COMPLETE").write_text(str(step))
            _fsync_dir(tmp)
        except (OSError, RuntimeError, SafetensorError) as exc:  # torch and safetensors wrap failed writes
            shutil.rmtree(tmp, ignore_errors=True)
            reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1]
            raise MentorError(
                f"could not write checkpoint {final} ({reason}): free disk space and run the same "
                "command again to resume (the previous checkpoint is intact)"
            ) from None
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(self.checkpoints)
        self._prune(keep)
        return final

    def _remove_partial_checkpoints(self) -> None:
        """Temporary directories of checkpoints (and of final/) whose writing was cut short: never used."""
        if self.checkpoints.exists():
            for partial in self.checkpoints.glob(f".tmp-{CHECKPOINT_PREFIX}*"):
                shutil.rmtree(partial, ignore_errors=True)
        final = self.path / "final"
        shutil.rmtree(final.with_name(".tmp-final"), ignore_errors=True)
        previous = final.with_name(".old-final")
        if previous.exists() and not final.exists():  # cut between the two renames of save_final
            os.replace(previous, final)
        shutil.rmtree(previous, ignore_errors=True)

    def _prune(self, keep: int) -> None:
        done = sorted(p for p in self.checkpoints.iterdir() if p.name.startswith(CHECKPOINT_PREFIX))
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def write_summary(self, text: str) -> None:
        _atomic_write_text(self.path / "summary.md", text)

    def save_final(self, model, tokenizer, path: str | Path | None = None) -> Path:
        """The trained model in ``final/`` (or ``path``), written like a checkpoint: to a temporary directory,
        fsynced, then renamed into place, so a full disk or a kill never leaves a half-written ``final/``.
        Weights that are not all finite are refused: a NaN model must not pass for a result."""
        from mentor.models.loading import save_pretrained

        final = Path(path) if path is not None else self.path / "final"
        check_finite_weights(model)
        tmp, previous = final.with_name(f".tmp-{final.name}"), final.with_name(f".old-{final.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            save_pretrained(model, tokenizer, tmp)
            for file in tmp.rglob("*"):
                if file.is_file():
                    _fsync_file(file)
            _fsync_dir(tmp)
            if final.exists():
                shutil.rmtree(previous, ignore_errors=True)
                os.replace(final, previous)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except (OSError, RuntimeError, SafetensorError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if previous.exists() and not final.exists():
                os.replace(previous, final)
            reason = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            checkpoint = self.latest_checkpoint()
            then = f"; the checkpoint {checkpoint.name} is intact" if checkpoint else ""
            raise MentorError(
                f"could not write the final model {final} ({reason}): free disk space and run the "
                f"same command again{then}"
            ) from None
        shutil.rmtree(previous, ignore_errors=True)
        return final


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
        raise MentorError(
            f"checkpoint {directory} cannot be read ({reason}): remove it to resume from the one "
            "before, or start a fresh --output-dir"
        ) from None
    except RuntimeError as exc:  # load_state_dict: a tensor of another shape
        detail = str(exc).strip().splitlines()[-1].strip().rstrip(".")
    else:
        if not missing and not unexpected:
            return
        detail = (
            f"{len(missing)} tensors missing, {len(unexpected)} unexpected, "
            f"e.g. {(sorted(missing) or sorted(unexpected))[0]}"
        )
    raise MentorError(
        f"checkpoint {directory} does not fit this model ({detail}): resume with the same model "
        "and LoRA settings, or start a fresh --output-dir"
    )


def check_finite_weights(model) -> None:
    """Every floating-point tensor of the model is finite, or one line naming the first that is not."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise MentorError(
                f"the trained weights are not finite ({name} holds NaN or inf), so no final model was "
                "written: lower --learning-rate or --max-grad-norm, or train in float32"
            )


def _named_paths(value) -> list[str]:
    """``path``, ``a,b`` or ``name=path,name=path`` (one teacher/prompt file per data set) -> the paths."""
    if not isinstance(value, str) or not value or is_url(value):
        return []
    return [part.split("=", 1)[-1].strip() for part in value.split(",") if part.strip()]


def load_trainer_state(checkpoint: Path) -> dict:
    return torch.load(checkpoint / "trainer_state.pt", map_location="cpu", weights_only=False)


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


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


def read_records(file: Path) -> list[dict]:
    """The JSON objects of a run's JSONL file (metrics, samples); none if it does not exist yet."""
    if not file.exists():
        return []
    records = []
    for line in file.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill mid-write; resuming rewrites it
        if isinstance(record, dict):
            records.append(record)
    return records


def truncate_records(file: Path, last_step: int) -> None:
    """Keep the records of steps up to ``last_step`` (a resumed run writes the later ones again, identically)."""
    if file.exists():
        kept = [r for r in read_records(file) if r.get("step", 0) <= last_step]
        _atomic_write_text(file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))


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


def _probe_mkdir(existing: Path, path: Path) -> None:
    """Make (and remove) a directory where the run's will go: os.access says yes to root where mkdir still
    fails (/proc, a read-only or full mount), and that must be said before any work, not after it."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mentor-probe-", dir=existing))
    except OSError as exc:
        raise MentorError(
            f"cannot write the run directory {path} ({exc.strerror or exc}): choose a writable "
            "--output-dir with free space"
        ) from None
