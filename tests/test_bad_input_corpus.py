"""The bad-input corpus (issue 11): inputs a new user could try, one table row each, over the classes of failure.

Every CLI case runs ``mentor.cli.main`` in-process (argparse's exit included) and must:
- exit with code 2 (no case here stops on a signal),
- print exactly one line on stderr, ``mentor: error: ...``, matching what is wrong and what to change,
- show no traceback and no ``done:`` line,
- leave every file of the user's workspace and of the models it reads byte-for-byte as it was (nothing deleted
  or changed that mentor did not create), and
- leave no result that could pass for a real one (no new ``final/``, ``summary.md`` or ``metrics.jsonl``).

The teacher-server cases send raw bytes to a real ``TeacherServer`` and must get a 4xx JSON error, the server
still answering afterwards. The Python cases build configs in code: they are held to the same rules.
Classes: data loss, tracebacks, unbounded work, silently wrong results, hangs and misleading lines, server.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import socket
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import mentor.score.http as http_client
from mentor.cli import main
from mentor.config import DistillConfig, RLConfig, SFTConfig
from mentor.errors import MentorError
from mentor.models.loading import load_model, load_tokenizer
from mentor.serve import TeacherServer
from mentor.train.run_dir import RunDirectory

GOOD = [{"prompt": "12+34*5="}, {"prompt": "7*8+9="}, {"prompt": "45+6+7="}, {"prompt": "5+5*5="}]


@dataclass
class Env:
    """What a case sees: its workspace (the user's files), the models, and the fake teacher servers."""

    ws: Path
    m: dict
    servers: dict

    @property
    def prompts(self) -> str:
        return str(self.ws / "prompts.jsonl")

    @property
    def out(self) -> str:
        return str(self.ws / "run")

    def write(self, name: str, text: str | bytes) -> str:
        path = self.ws / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    def mentor_run(self, name: str = "old", final: bool = True) -> Path:
        """A finished mentor run of another config (final/ included), as an earlier command left it."""
        run = RunDirectory(self.ws / name)
        run.claim(DistillConfig(student="other", teacher="other", task="arithmetic", output_dir=str(run.path)))
        if final:
            (run.path / "final").mkdir()
            (run.path / "final" / "config.json").write_text("{}")
        return run.path


def distill(e: Env, *extra: str, student=None, teacher=None, prompts=None, out=None) -> list[str]:
    return [
        "distill",
        "--student",
        student or e.m["student"],
        "--teacher",
        teacher or e.m["teacher"],
        "--prompts",
        prompts or e.prompts,
        "--output-dir",
        out or e.out,
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--group-size",
        "2",
        "--max-new-tokens",
        "4",
        "--quiet",
        *extra,
    ]


def sft(e: Env, *extra: str, model=None, data=None) -> list[str]:
    return [
        "sft",
        "--model",
        model or e.m["student"],
        "--data",
        data or e.m["sft_data"],
        "--output-dir",
        e.out,
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--group-size",
        "1",
        "--max-new-tokens",
        "8",
        "--quiet",
        *extra,
    ]


def rl(e: Env, *extra: str, prompts=None) -> list[str]:
    return [
        "rl",
        "--model",
        e.m["student"],
        "--prompts",
        prompts or e.prompts,
        "--grader",
        "numeric",
        "--output-dir",
        e.out,
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--group-size",
        "2",
        "--max-new-tokens",
        "4",
        "--quiet",
        *extra,
    ]


def coe(e: Env, step: str, *extra: str, out=None) -> list[str]:
    return [
        "coe",
        step,
        "--base",
        e.m["student"],
        "--builtin",
        "--train-size",
        "4",
        "--output-dir",
        out or e.out,
        "--quiet",
        *extra,
    ]


def with_yaml(text: str | bytes, name: str = "opd.yaml"):
    """A distill command reading a config file the case writes into the workspace."""
    return lambda e: distill(e, "--config", e.write(name, text))


@dataclass
class Case:
    name: str
    kind: str  # the class of failure (module docstring)
    run: Callable[[Env], list[str] | Callable[[], object]]  # argv for the CLI, or a Python call
    problem: str  # regexes the one line must match: what is wrong ...
    fix: str  # ... and what to change
    chdir: bool = False  # run from inside the workspace (cases about ".")


def _python(call):
    return lambda e: lambda: call(e)


CASES = [
    # --- data loss: mentor deletes only what it wrote, never an input, never a stranger's directory -------------
    Case(
        "output dir holds the user's files",
        "data loss",
        lambda e: distill(e, out=str(Path(e.write("mine/notes.txt", "my notes")).parent)),
        r"mine is not empty and is not a mentor run \(it holds notes\.txt\)",
        r"choose a new or empty directory",
    ),
    Case(
        "output dir holds the user's files, --overwrite",
        "data loss",
        lambda e: distill(e, "--overwrite", out=str(Path(e.write("mine/notes.txt", "my notes")).parent)),
        r"is not empty and is not a mentor run",
        r"mentor never deletes or mixes with files it did not write",
    ),
    Case(
        "--output-dir . (the working directory)",
        "data loss",
        lambda e: distill(e, out="."),
        r"--output-dir \. is not empty and is not a mentor run \(it holds .*notes\.txt",
        r"choose a new or empty",
        chdir=True,
    ),
    Case(
        "--output-dir . --overwrite",
        "data loss",
        lambda e: distill(e, "--overwrite", out="."),
        r"--output-dir \. is not empty and is not a mentor run",
        r"choose a new or empty directory",
        chdir=True,
    ),
    Case(
        "output dir is the prompts file's own folder",
        "data loss",
        lambda e: distill(e, prompts=e.write("data/p.jsonl", e.m["good_text"]), out=str(e.ws / "data")),
        r"data is not empty and is not a mentor run \(it holds p\.jsonl\)",
        r"choose a new or empty directory",
    ),
    Case(
        "--student inside the final/ that --overwrite would replace",
        "data loss",
        lambda e: distill(e, "--overwrite", student=str(_student_in_final(e)), out=str(e.ws / "old")),
        r"--student \S+old/final/student lies inside \S+old/final, which this run would replace",
        r"copy it out of the run directory or choose another --output-dir",
    ),
    Case(
        "--prompts inside the checkpoints of the run it overwrites",
        "data loss",
        lambda e: distill(
            e, "--overwrite", prompts=_file_in(e.mentor_run(), "checkpoints/p.jsonl", e), out=str(e.ws / "old")
        ),
        r"--prompts \S+ lies inside \S+old/checkpoints, which this run would replace",
        r"copy it out",
    ),
    Case(
        "output dir is a file",
        "data loss",
        lambda e: distill(e, out=e.write("notes.md", "# mine")),
        r"--output-dir \S+notes\.md is a file, not a directory",
        r"choose a directory for the run",
    ),
    Case(
        "output dir below a file",
        "data loss",
        lambda e: distill(e, out=str(Path(e.write("notes.md", "# mine")) / "run")),
        r"cannot be created: \S+notes\.md is a file",
        r"--output-dir",
    ),
    Case(
        "output dir that cannot be created (/proc)",
        "data loss",
        lambda e: distill(e, out="/proc/mentor-corpus/run"),
        r"(cannot write the run directory|is not writable \().*/proc",
        r"choose a writable --output-dir|you can write to",
    ),
    Case(
        "output dir holds a broken config.yaml",
        "data loss",
        lambda e: distill(e, out=str(_broken_config(e))),
        r"holds a config\.yaml mentor cannot read",
        r"choose another --output-dir, or pass --overwrite",
    ),
    Case(
        "output dir holds someone else's config.yaml",
        "data loss",
        lambda e: distill(e, "--overwrite", out=str(Path(e.write("proj/config.yaml", "name: my-project\n")).parent)),
        r"proj is not empty and is not a mentor run \(it holds config\.yaml\)",
        r"choose a new or empty directory",
    ),
    Case(
        "a mentor run of another config, no --overwrite",
        "data loss",
        lambda e: distill(e, out=str(e.mentor_run())),
        r"belongs to a different config \(differs in",
        r"choose another --output-dir or pass --overwrite",
    ),
    Case(
        "--resume where there is nothing to resume",
        "data loss",
        lambda e: distill(e, "--resume"),
        r"--resume: \S+ holds no checkpoint to resume from",
        r"drop --resume to start the run",
    ),
    Case(
        "demo --out a folder of the user's",
        "data loss",
        lambda e: ["demo", "--quick", "--out", str(Path(e.write("mine/notes.txt", "x")).parent)],
        r"--out \S+mine is not empty and was not written by mentor \(it holds notes\.txt\)",
        r"choose a new or empty directory",
    ),
    Case(
        "bench coe --out a folder whose runs/ is the user's",
        "data loss",
        lambda e: ["bench", "coe", "--quick", "--out", str(Path(e.write("proj/runs/notes.txt", "x")).parent.parent)],
        r"proj/runs exists and was not made by mentor bench coe",
        r"choose another --out",
    ),
    Case(
        "coe label --output-dir a folder of the user's",
        "data loss",
        lambda e: coe(e, "label", out=str(Path(e.write("mine/labels/general.jsonl", "{}")).parent.parent)),
        r"mine is not empty and was not written by mentor \(it holds labels\)",
        r"choose a new or empty",
    ),
    # --- tracebacks from deep inside: each is one line at the boundary -------------------------------------
    Case(
        "truncated safetensors",
        "traceback",
        lambda e: distill(e, student=e.m["truncated"]),
        r"cannot load the student from \S+truncated' \(Error while deserializing header",
        r"check that its config\.json and weight files are complete",
    ),
    Case(
        "random bytes for weights",
        "traceback",
        lambda e: distill(e, student=e.m["random_bytes"]),
        r"cannot load the student from \S+random_bytes'",
        r"weight files are complete",
    ),
    Case(
        "an empty model directory",
        "traceback",
        lambda e: distill(e, teacher=e.m["empty"]),
        r"teacher \S+empty' is an empty directory",
        r"pass the directory a model was saved to",
    ),
    Case(
        "a model directory without weights",
        "traceback",
        lambda e: distill(e, student=e.m["no_weights"]),
        r"cannot load the student from \S+no_weights' \(Error no file named model\.safetensors",
        r"weight files are complete",
    ),
    Case(
        "a model directory without config.json",
        "traceback",
        lambda e: distill(e, student=e.m["no_config"]),
        r"student \S+no_config' holds no config\.json",
        r"pass the directory a model was saved to",
    ),
    Case(
        "config.json that is not JSON",
        "traceback",
        lambda e: distill(e, student=e.m["bad_config"]),
        r"cannot load the student tokenizer from \S+bad_config'.*not a valid JSON",
        r"check its tokenizer files",
    ),
    Case(
        "corrupt tokenizer.json",
        "traceback",
        lambda e: distill(e, student=e.m["bad_tokenizer"]),
        r"cannot load the student tokenizer from \S+bad_tokenizer'",
        r"check its tokenizer files",
    ),
    Case(
        "tokenizer.json of random bytes",
        "traceback",
        lambda e: distill(e, teacher=e.m["random_tokenizer"]),
        r"cannot load the teacher tokenizer from \S+random_tokenizer'",
        r"check its tokenizer files",
    ),
    Case(
        "eval of a run without final/",
        "traceback",
        lambda e: ["eval", str(e.mentor_run(final=False)), "--size", "2"],
        r"old is a run directory without final/ \(the run has not finished\)",
        r"run its command again",
    ),
    Case(
        "seed below 0",
        "traceback",
        lambda e: distill(e, "--seed", "-1"),
        r"--seed must lie in 0\.\.4294967295 \(got -1\)",
        r"0\.\.4294967295",
    ),
    Case(
        "seed above 2^32-1",
        "traceback",
        lambda e: distill(e, "--seed", str(2**32)),
        r"--seed must lie in 0\.\.4294967295 \(got 4294967296\)",
        r"must lie in",
    ),
    Case(
        "LoRA target modules that match nothing",
        "traceback",
        lambda e: distill(e, "--lora-rank", "4", "--lora-target-modules", "attention_qkv"),
        r"--lora-target-modules attention_qkv matches no layer",
        r"use all-linear or some of .*q_proj",
    ),
    Case(
        "YAML: a list where text is expected",
        "traceback",
        with_yaml("lora_target_modules: [q_proj, v_proj]\n"),
        r"config field lora_target_modules must be text \(got list",
        r"write a comma list as one string",
    ),
    Case(
        "YAML: a number for a path",
        "traceback",
        with_yaml("teacher_tokenizer: 123\n"),
        r"config field teacher_tokenizer must be text \(got int 123\)",
        r"must be text",
    ),
    Case(
        "YAML: a mapping for a number",
        "traceback",
        with_yaml("learning_rate: {value: 0.001}\n"),
        r"config field learning_rate must be a number",
        r"got \{'value': 0\.001\}",
    ),
    Case(
        "YAML: true for a count",
        "traceback",
        with_yaml("keep_checkpoints: true\n"),
        r"config field keep_checkpoints must be a whole number \(got True\)",
        r"whole number",
    ),
    Case(
        "YAML: a fraction for a count",
        "traceback",
        with_yaml("micro_batch_size: 2.5\n"),
        r"config field micro_batch_size must be a whole number \(got 2\.5\)",
        r"whole number",
    ),
    Case(
        "YAML: a key with no value",
        "traceback",
        with_yaml("warmup_steps:\n"),
        r"config field warmup_steps is empty \(null\)",
        r"give it a value or leave it out",
    ),
    Case(
        "YAML: text for a switch",
        "traceback",
        with_yaml("chat_template: sometimes\n"),
        r"config field chat_template must be true or false",
        r"got 'sometimes'",
    ),
    Case(
        "YAML: a key that is not a name",
        "traceback",
        with_yaml("1: 2\n"),
        r"has a key that is not a field name \(1\)",
        r"write field: value lines",
    ),
    Case(
        "--config is a folder",
        "traceback",
        lambda e: distill(e, "--config", str(e.ws)),
        r"config file \S+ is not a file",
        r"pass a \.yaml file to --config",
    ),
    Case(
        "--config in UTF-16 without a byte-order mark",
        "traceback",
        with_yaml("learning_rate: 0.001\n".encode("utf-16-le")),
        r"opd\.yaml' is not UTF-8 text",
        r"save it as UTF-8",
    ),
    Case(
        "--config of random bytes",
        "traceback",
        with_yaml(bytes(range(256)) * 4),
        r"opd\.yaml' is not UTF-8 text",
        r"save it as UTF-8",
    ),
    Case(
        "--teacher-timeout inf",
        "traceback",
        lambda e: distill(e, "--teacher-timeout", "inf"),
        r"argument --teacher-timeout: 'inf' is not a finite number",
        r"mentor distill --help",
    ),
    Case(
        "--teacher-timeout 0",
        "traceback",
        lambda e: distill(e, "--teacher-timeout", "0"),
        r"--teacher-timeout must be positive",
        r"seconds",
    ),
    Case(
        "a flag value of the wrong type",
        "traceback",
        lambda e: distill(e, "--steps", "three"),
        r"argument --steps: invalid int value: 'three'",
        r"mentor distill --help` lists the options",
    ),
    Case(
        "a misspelled flag",
        "traceback",
        lambda e: distill(e, "--learnig-rate", "0.1"),
        r"unrecognized arguments: --learnig-rate",
        r"lists the options",
    ),
    Case(
        "coe label --categories ''",
        "traceback",
        lambda e: coe(e, "label", "--categories", ""),
        r"--categories is empty",
        r"name the categories, e\.g\. general,math,coding",
    ),
    Case(
        "coe --categories with a path in a name",
        "traceback",
        lambda e: coe(e, "label", "--categories", "a,../b"),
        r"--categories must be distinct names .*got '\.\./b'",
        r"each becomes a file and an expert",
    ),
    Case(
        "serve-teacher on port 70000",
        "traceback",
        lambda e: ["serve-teacher", e.m["teacher"], "--port", "70000"],
        r"--port 70000 is not a TCP port",
        r"use 1\.\.65535, or 0 to pick a free one",
    ),
    Case(
        "serve-teacher on a device this machine lacks",
        "traceback",
        lambda e: ["serve-teacher", e.m["teacher"], "--device", "cuda:7"],
        r"--device cuda:7 is not on this machine",
        r"use --device cpu",
    ),
    Case(
        "serve-teacher on a device that is no device",
        "traceback",
        lambda e: ["serve-teacher", e.m["teacher"], "--device", "gpu-please"],
        r"--device 'gpu-please' is not a device",
        r"use cpu, cuda, cuda:1 or mps",
    ),
    Case(
        "serve-teacher --max-batch-tokens 0",
        "traceback",
        lambda e: ["serve-teacher", e.m["teacher"], "--max-batch-tokens", "0"],
        r"--max-batch-tokens must be at least 1",
        r"at least 1",
    ),
    Case(
        "a teacher that answers a JSON list",
        "traceback",
        lambda e: distill(e, "--teacher-tokenizer", e.m["student"], teacher=e.servers["json_list"]),
        r"answered a JSON list, not an object",
        r"OpenAI-compatible endpoint",
    ),
    Case(
        "a teacher whose log-probs are strings",
        "traceback",
        lambda e: distill(e, "--teacher-tokenizer", e.m["student"], teacher=e.servers["string_logprobs"]),
        r"log-prob 'about -1' at position 1 is not a number",
        r"point --teacher at an OpenAI-compatible",
    ),
    # --- unbounded work: sizes are checked before the expensive part -----------------------------------
    Case(
        "a 20 MB one-line prompt, --long-prompts fail",
        "unbounded",
        lambda e: distill(e, "--long-prompts", "fail", prompts=e.write("huge.jsonl", _huge_prompt())),
        r"prompt has 20000000 characters, far over the limit of 60 tokens",
        r"shorten it or pass --long-prompts skip",
    ),
    Case(
        "only a 20 MB one-line prompt",
        "unbounded",
        lambda e: distill(e, prompts=e.write("huge.jsonl", _huge_prompt())),
        r"all 1 prompts are longer than 60 tokens",
        r"raise --max-prompt-tokens",
    ),
    Case(
        "a config file of 2 MiB",
        "unbounded",
        with_yaml(b"# padding\n" * 210_000),
        r"opd\.yaml' is 2 MiB, not a config",
        r"pass the YAML file of config fields",
    ),
    # --- silently wrong results (exit 0 before): refused before any work ----------------------------------
    Case(
        "--max-grad-norm nan",
        "silent",
        lambda e: distill(e, "--max-grad-norm", "nan"),
        r"argument --max-grad-norm: 'nan' is not a finite number",
        r"--help",
    ),
    Case(
        "max_grad_norm: .nan in YAML",
        "silent",
        with_yaml("max_grad_norm: .nan\n"),
        r"config field max_grad_norm must be a finite number \(got nan\)",
        r"finite",
    ),
    Case(
        "--dtype float16",
        "silent",
        lambda e: distill(e, "--dtype", "float16"),
        r"--dtype float16 cannot train",
        r"use bfloat16 or float32",
    ),
    Case(
        "config.json whose model_type does not match its weights",
        "silent",
        lambda e: distill(e, student=e.m["other_type"]),
        r"does not match its config\.json: 4 tensors unused by the architecture",
        r"check model_type",
    ),
    Case(
        "--reward-coef without a grader",
        "silent",
        lambda e: distill(e, "--reward-coef", "1"),
        r"--reward-coef needs a --task whose grader rewards the samples",
        r"or drop it",
    ),
    Case(
        "--reward-coef with group size 1",
        "silent",
        lambda e: distill(e, "--reward-coef", "1", "--task", "arithmetic", "--group-size", "1"),
        r"--reward-coef needs --group-size of at least 2",
        r"centred on its group's mean",
    ),
    Case(
        "negative --kl-coef",
        "silent",
        lambda e: distill(e, "--kl-coef", "-1"),
        r"--kl-coef cannot be negative",
        r"inverts the objective",
    ),
    Case(
        "--kl-coef 0 and no reward",
        "silent",
        lambda e: distill(e, "--kl-coef", "0"),
        r"--kl-coef 0 without --reward-coef leaves nothing to learn",
        r"raise --kl-coef",
    ),
    Case(
        "--top-p 0",
        "silent",
        lambda e: distill(e, "--top-p", "0"),
        r"--top-k/--top-p cannot be used for training",
        r"lower --temperature instead",
    ),
    Case(
        "--eval-size 0",
        "silent",
        lambda e: distill(e, "--eval-size", "0", "--task", "arithmetic"),
        r"--eval-size must be at least 1 \(got 0\)",
        r"at least 1",
    ),
    Case(
        "--loss ppo with clip ratio 0",
        "silent",
        lambda e: distill(e, "--loss", "ppo"),
        r"--loss ppo needs --clip-ratio above 0",
        r"e\.g\. 0\.2",
    ),
    Case(
        "a truncation cap below 1",
        "silent",
        lambda e: distill(e, "--tis-cap", "0.5"),
        r"--tis-cap 0\.5 must be at least 1 \(or 0 for off\)",
        r"down-weight the tokens",
    ),
    Case(
        "duplicate YAML keys",
        "silent",
        with_yaml("learning_rate: 0.001\nsteps: 2\nlearning_rate: 0.1\n"),
        r"sets 'learning_rate' on line 1 and again on line 3",
        r"keep one",
    ),
    Case(
        "pass@k from temperature-0 samples",
        "silent",
        lambda e: ["eval", e.m["student"], "--samples", "4", "--temperature", "0", "--size", "2"],
        r"--samples 4 at --temperature 0\.0 draws the same greedy answer",
        r"use a temperature above 0",
    ),
    Case(
        "RL prompts without answers",
        "silent",
        lambda e: rl(e),
        r"4 of 4 prompts in \S+prompts\.jsonl have no 'answer'",
        r"give every RL record an answer",
    ),
    Case(
        "rl --loss ppo --clip-ratio 0",
        "silent",
        lambda e: rl(e, "--loss", "ppo", "--clip-ratio", "0"),
        r"--loss ppo needs --clip-ratio above 0",
        r"e\.g\. 0\.2",
    ),
    Case(
        "rl --reference without --kl-coef",
        "silent",
        lambda e: rl(e, "--reference", e.m["teacher"]),
        r"--reference only acts with --kl-coef above 0",
        r"add one or drop it",
    ),
    Case(
        "sft --teacher-samples without --from-teacher",
        "silent",
        lambda e: sft(e, "--teacher-samples", "4"),
        r"--teacher-samples only act with --from-teacher",
        r"add it or drop them",
    ),
    Case(
        "--log-with a tracker that does not exist",
        "silent",
        lambda e: distill(e, "--log-with", "tensorbord"),
        r"--log-with 'tensorbord' is not a tracker",
        r"use a comma list of tensorboard",
    ),
    Case(
        "a learning rate of 1e39",
        "silent",
        lambda e: distill(e, "--learning-rate", "1e39"),
        r"--learning-rate 1e\+39 is far too large",
        r"use a value such as 1e-4",
    ),
    Case(
        "a student whose weights hold NaN",
        "silent",
        lambda e: distill(e, student=e.m["nan_weights"]),
        r"the student \S+nan_weights' holds weights that are not finite \(\S+ has NaN or inf\)",
        r"the checkpoint is damaged; use another one",
    ),
    Case(
        "DistillConfig(steps=-5) built in Python",
        "silent",
        _python(
            lambda e: DistillConfig(
                student=e.m["student"], teacher=e.m["teacher"], prompts=e.prompts, output_dir=e.out, steps=-5
            )
        ),
        r"--steps must be at least 1 \(got -5\)",
        r"at least 1",
    ),
    Case(
        "SFTConfig with a list for --data, built in Python",
        "silent",
        _python(lambda e: SFTConfig(model=e.m["student"], data=[e.prompts], output_dir=e.out)),
        r"config field data must be text \(got list",
        r"comma list",
    ),
    Case(
        "RLConfig with learning_rate=inf, built in Python",
        "silent",
        _python(lambda e: RLConfig(model=e.m["student"], task="arithmetic", learning_rate=float("inf"))),
        r"config field learning_rate must be a finite number \(got inf\)",
        r"finite",
    ),
    # --- hangs and misleading lines ------------------------------------------------------------------
    Case(
        "a teacher that accepts and never answers",
        "hang",
        lambda e: distill(
            e, "--teacher-tokenizer", e.m["student"], "--teacher-timeout", "0.3", teacher=e.servers["silent"]
        ),
        r"failed 5 times \(last: connected, but no answer within 0\.3 s \(waiting for its first byte",
        r"check that it is running and reachable, or raise --teacher-timeout",
    ),
    Case(
        "--max-bad-steps 0",
        "hang",
        lambda e: distill(e, "--max-bad-steps", "0"),
        r"--max-bad-steps must be at least 1 \(got 0\)",
        r"at least 1",
    ),
    Case(
        "coe --top-k above the number of experts",
        "hang",
        lambda e: coe(e, "label", "--top-k", "5"),
        r"--top-k must lie in 1\.\.3 \(the number of experts; got 5\)",
        r"1\.\.3",
    ),
    Case(
        "a local-looking path that does not exist",
        "hang",
        lambda e: distill(e, student=str(Path(e.write("models/README", "x")).parent.name) + "/student-v2"),
        r"student 'models/student-v2' does not exist",
        r"pass a model directory",
        chdir=True,
    ),
    Case(
        "--max-new-tokens beyond the model's context",
        "hang",
        lambda e: distill(e, "--max-new-tokens", "100"),
        r"--max-new-tokens 100 leaves no room for a prompt in the model's context of 64 tokens",
        r"lower it below 64",
    ),
    Case(
        "--max-prompt-tokens + --max-new-tokens beyond the context",
        "hang",
        lambda e: distill(e, "--max-prompt-tokens", "62"),
        r"--max-prompt-tokens 62 plus --max-new-tokens 4 exceed the model's context of 64",
        r"lower one of them",
    ),
    Case(
        "non-finite steps with no checkpoint: the line says none was written",
        "hang",
        lambda e: distill(e, "--steps", "3", "--max-bad-steps", "1", teacher=e.m["overflow_teacher"]),
        r"1 steps in a row had a non-finite loss or gradient; stopped \(no checkpoint was written",
        r"--save-every N keeps one",
    ),
]


def _huge_prompt() -> str:
    return json.dumps({"prompt": "1+" * 10_000_000}) + "\n"


def _student_in_final(e: Env) -> Path:
    run = e.mentor_run()
    shutil.copytree(e.m["student"], run / "final" / "student")
    return run / "final" / "student"


def _file_in(run: Path, relative: str, e: Env) -> str:
    (run / relative).parent.mkdir(parents=True, exist_ok=True)
    (run / relative).write_text(e.m["good_text"])
    return str(run / relative)


def _broken_config(e: Env) -> Path:
    run = e.mentor_run(final=False)
    (run / "config.yaml").write_text("steps: [unclosed\n")
    return run


# --- fixtures ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus_models(tiny_dirs, tmp_path_factory):
    """The tiny student and teacher, plus broken copies of the student (each as a user could end up with)."""
    root = tmp_path_factory.mktemp("corpus-models")
    student = Path(tiny_dirs["student"])

    def variant(name: str, change) -> str:
        path = root / name
        shutil.copytree(student, path)
        change(path)
        return str(path)

    weights = (student / "model.safetensors").read_bytes()
    models = {
        "student": str(student),
        "teacher": tiny_dirs["teacher"],
        "truncated": variant(
            "truncated", lambda p: (p / "model.safetensors").write_bytes(weights[: len(weights) // 2])
        ),
        "random_bytes": variant("random_bytes", lambda p: (p / "model.safetensors").write_bytes(os.urandom(4096))),
        "no_weights": variant("no_weights", lambda p: (p / "model.safetensors").unlink()),
        "no_config": variant("no_config", lambda p: (p / "config.json").unlink()),
        "bad_config": variant("bad_config", lambda p: (p / "config.json").write_text("{not json")),
        "bad_tokenizer": variant(
            "bad_tokenizer",
            lambda p: (p / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "nonsense"}}'),
        ),
        "random_tokenizer": variant("random_tokenizer", lambda p: (p / "tokenizer.json").write_bytes(os.urandom(512))),
        "other_type": variant("other_type", _claim_llama),
        "nan_weights": variant("nan_weights", lambda p: _scale_weights(p, "norm", math.nan)),
    }
    # finite weights so large that the teacher's logits overflow: every log-prob it gives is NaN
    models["overflow_teacher"] = str(root / "overflow_teacher")
    shutil.copytree(tiny_dirs["teacher"], models["overflow_teacher"])
    _scale_weights(Path(models["overflow_teacher"]), "model.norm.weight", 3e38)
    (root / "empty").mkdir()
    models["empty"] = str(root / "empty")
    models["good_text"] = "".join(json.dumps(r) + "\n" for r in GOOD)
    sft_data = root / "sft.jsonl"
    sft_data.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": "1"}) + "\n" for r in GOOD))
    models["sft_data"] = str(sft_data)
    return models


def _scale_weights(path: Path, part: str, factor: float) -> None:
    """Multiply the tensors whose name contains ``part`` (NaN: set them to NaN)."""
    from safetensors.torch import load_file, save_file

    weights = load_file(path / "model.safetensors")
    for name in [n for n in weights if part in n][:2]:
        weights[name] = torch.full_like(weights[name], factor) if math.isnan(factor) else weights[name] * factor
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})


def _claim_llama(path: Path) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (path / "config.json").write_text(json.dumps(config))


class _FakeTeacher(BaseHTTPRequestHandler):
    """An HTTP server that speaks just enough of the protocol to get to scoring, then answers ``self.answer``."""

    answer: object = None

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = self.answer(body) if callable(self.answer) else self.answer
        self._send(answer)

    def _send(self, payload):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _string_logprobs(body: dict) -> dict:
    return {
        "choices": [
            {"index": i, "logprobs": {"token_logprobs": [None] + ["about -1"] * len(p)}}
            for i, p in enumerate(body["prompt"])
        ]
    }


@pytest.fixture(scope="module")
def fake_servers():
    servers, urls = [], {}
    for name, answer in (("json_list", ["not", "an", "object"]), ("string_logprobs", _string_logprobs)):
        handler = type(
            f"Fake_{name}", (_FakeTeacher,), {"answer": staticmethod(answer) if callable(answer) else answer}
        )
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        urls[name] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never reads or answers
    urls["silent"] = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
    yield urls
    for server in servers:
        server.shutdown()
        server.server_close()
    silent.close()


@pytest.fixture(autouse=True)
def no_backoff_sleep(monkeypatch):
    """Retries keep their count and order; only the waits between them go (the outcome does not depend on them)."""
    monkeypatch.setattr(
        http_client, "time", types.SimpleNamespace(sleep=lambda seconds: None, perf_counter=time.perf_counter)
    )


def _snapshot(*roots: Path) -> dict[str, str]:
    """Every file under the roots: its content hash (what the user has, before and after)."""
    files = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file() and not path.is_symlink():
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def _results(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.name in ("final", "summary.md", "metrics.jsonl")}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, corpus_models, fake_servers, tmp_path, capsys, monkeypatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "prompts.jsonl").write_text(corpus_models["good_text"])
    (ws / "notes.txt").write_text("the user's own notes: mentor must never touch them\n")
    env = Env(ws, corpus_models, fake_servers)
    if case.chdir:
        monkeypatch.chdir(ws)
    command = case.run(env)  # may set up more of the user's files (a previous run, a config file)
    inputs = [Path(p) for k, p in corpus_models.items() if k not in ("good_text",) and Path(p).exists()]
    before, results_before = _snapshot(ws, *inputs), _results(ws)

    if callable(command):  # a config built in Python
        with pytest.raises(MentorError) as raised:
            command()
        lines, code, out = [f"mentor: error: {raised.value}"], 2, ""
        assert "\n" not in str(raised.value)
    else:
        try:
            code = main(command)
        except SystemExit as exit_:  # argparse
            code = exit_.code
        captured = capsys.readouterr()
        lines, out = captured.err.strip().splitlines(), captured.out
        assert "Traceback" not in captured.err + captured.out
    assert code == 2, (code, lines)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("mentor: error: "), line
    assert re.search(case.problem, line), line
    assert re.search(case.fix, line), line
    assert not re.search(r"^done", out, re.M), out

    after = _snapshot(ws, *inputs)
    assert {p: h for p, h in before.items() if after.get(p) != h} == {}, "a file mentor did not write changed"
    assert _results(ws) <= results_before, "a result was left behind"


def test_the_corpus_covers_every_class_with_60_cases_or_more():
    kinds = {c.kind for c in CASES}
    assert kinds == {"data loss", "traceback", "unbounded", "silent", "hang"}
    assert len(CASES) + len(SERVER_CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)


# --- the teacher server: raw bytes on a real socket -------------------------------------------------------
def _post(body: bytes, **headers) -> bytes:
    head = {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items() if v is not None)
    return f"POST /v1/completions HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode() + body


SERVER_CASES = [
    ("JSON nested 100,000 deep", _post(b"[" * 100_000), 400, r"nested too deeply"),
    ("an object nested 50,000 deep", _post(b'{"a":' * 50_000), 400, r"nested too deeply|not valid JSON"),
    ("a negative Content-Length", _post(b"{}", **{"Content-Length": "-5"}), 400, r"is not a byte count"),
    (
        "a Content-Length that is not a number",
        _post(b"{}", **{"Content-Length": "twelve"}),
        400,
        r"is not a byte count",
    ),
    (
        "a Content-Length longer than the body",
        _post(b'{"prompt": [1]}', **{"Content-Length": "900"}),
        400,
        r"the body ended after 15 of 900 bytes",
    ),
    (
        "a chunked body",
        _post(b"5\r\n{} \r\n0\r\n\r\n", **{"Content-Length": None, "Transfer-Encoding": "chunked"}),
        411,
        r"not chunked",
    ),
    ("an integer of 5,000 digits", _post(b'{"prompt": [' + b"7" * 5000 + b"]}"), 400, r"not valid JSON"),
    ("a Content-Length over the limit", _post(b"{}", **{"Content-Length": str(2**40)}), 413, r"exceeds"),
    (
        "a method the server does not serve",
        b"DELETE /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n",
        405,
        r"method DELETE is not served",
    ),
    ("a made-up method", b"BREW /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n", 405, r"method BREW is not served"),
]


@pytest.fixture(scope="module")
def teacher_server(tiny_dirs):
    model, tokenizer = load_model(tiny_dirs["teacher"]), load_tokenizer(tiny_dirs["teacher"])
    with TeacherServer(model, tokenizer, model_name="t", port=0, max_request_bytes=2**20, idle_timeout=30) as server:
        yield server


def _exchange(server: TeacherServer, raw: bytes) -> tuple[int, dict]:
    with socket.create_connection(server.httpd.server_address[:2], timeout=60) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)  # the client has said all it will say
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}


@pytest.mark.parametrize("name,raw,status,message", SERVER_CASES, ids=[c[0] for c in SERVER_CASES])
def test_bad_request_to_the_teacher_server(name, raw, status, message, teacher_server):
    got, payload = _exchange(teacher_server, raw)
    assert got == status, (got, payload)
    assert re.search(message, payload["error"]["message"]), payload
    assert "\n" not in payload["error"]["message"]
    ok, alive = _exchange(teacher_server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ok == 200 and alive == {"status": "ok"}


def test_a_client_that_connects_and_never_sends_blocks_no_one(tiny_dirs):
    model, tokenizer = load_model(tiny_dirs["teacher"]), load_tokenizer(tiny_dirs["teacher"])
    with TeacherServer(model, tokenizer, port=0, idle_timeout=1.0) as server:
        address = server.httpd.server_address[:2]
        silent = socket.create_connection(address, timeout=60)  # connects, sends nothing
        half = socket.create_connection(address, timeout=60)  # sends half a request, then nothing
        half.sendall(b'POST /v1/completions HTTP/1.1\r\nContent-Length: 50\r\n\r\n{"pro')
        try:
            status, payload = _exchange(
                server,
                _post(json.dumps({"prompt": [[1, 2, 3]], "echo": True, "logprobs": 0, "max_tokens": 0}).encode()),
            )
            assert status == 200 and len(payload["choices"][0]["logprobs"]["token_logprobs"]) == 3
            # the idle connections are closed by the server (after its idle timeout), not kept forever
            assert silent.recv(1024) == b""
            assert b" 408 " in half.recv(4096).split(b"\r\n")[0] + b" "
        finally:
            silent.close()
            half.close()


# --- ownership: what mentor may delete, positively ---------------------------------------------------------
def _run_ok(argv: list[str]) -> None:
    assert main(argv) == 0


def _workspace(root: Path, models: dict) -> Env:
    (root / "prompts.jsonl").write_text(models["good_text"])
    return Env(root, models, {})


def test_overwrite_removes_only_what_mentor_wrote(corpus_models, tmp_path, monkeypatch):
    """A run directory that also holds the user's notes and the very prompts file the run reads: --overwrite
    with another config replaces mentor's files and leaves the user's alone."""
    env = _workspace(tmp_path, corpus_models)
    run = env.mentor_run("run")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    notes = run / "notes.txt"
    notes.write_text("mine")
    prompts = Path(env.write("run/prompts.jsonl", corpus_models["good_text"]))
    _run_ok(distill(env, "--overwrite", prompts=str(prompts), out=str(run)))
    assert notes.read_text() == "mine" and prompts.read_text() == corpus_models["good_text"]
    assert (run / "final" / "model.safetensors").exists() and not (run / "final" / "config.json").read_text() == "{}"
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert json.loads((run / ".mentor-files").read_text()) == sorted(json.loads((run / ".mentor-files").read_text()))
    assert "notes.txt" not in (run / ".mentor-files").read_text()


def test_a_run_directory_of_an_earlier_mentor_is_recognised(corpus_models, tmp_path):
    """No ownership record (written before there was one): its standard files are mentor's, nothing else."""
    env = _workspace(tmp_path, corpus_models)
    run = env.mentor_run("legacy")
    (run / ".mentor-files").unlink()
    (run / "notes.txt").write_text("mine")
    _run_ok(distill(env, "--overwrite", out=str(run)))
    assert (run / "notes.txt").read_text() == "mine" and (run / "final" / "model.safetensors").exists()


def test_final_is_written_atomically(corpus_models, tmp_path, monkeypatch, capsys):
    """A full disk while final/ is written: one line, no final/ (nor its temporary directory) left behind, and
    the run's previous final/ (a re-run of a finished run) is kept."""
    import mentor.models.loading as loading

    env = _workspace(tmp_path, corpus_models)
    _run_ok(distill(env, "--save-every", "1"))
    previous = _snapshot(Path(env.out) / "final")

    def disk_full(model, tokenizer, path, merge_lora=True):
        Path(path).mkdir(parents=True)
        (Path(path) / "model.safetensors").write_bytes(b"\0" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(loading, "save_pretrained", disk_full)
    capsys.readouterr()
    # --no-check: the start-up check's warnings about this toy pair (tests/test_check.py) precede training
    assert main(distill(env, "--save-every", "1", "--steps", "2", "--no-check")) == 2
    line = capsys.readouterr().err.strip()
    assert re.fullmatch(
        r"mentor: error: could not write the final model \S+final \(No space left on device\): "
        r"free disk space and run the same command again; the checkpoint step_00000002 is intact",
        line,
    ), line
    assert _snapshot(Path(env.out) / "final") == previous
    assert sorted(p.name for p in Path(env.out).iterdir() if p.name.startswith(".")) == [".mentor-files"]
    monkeypatch.undo()
    _run_ok(distill(env, "--save-every", "1", "--steps", "2"))
    assert _snapshot(Path(env.out) / "final") != previous


# --- the scoring engine: a request's answer does not depend on what it is batched with ------------------------
def test_scores_do_not_depend_on_other_requests(tiny_dirs):
    """The cause of the flaky remote-faults test: co-batched requests changed each other's last bits. Requests
    are now scored on their own; here three wait in the queue together (the worker is held on an event, so no
    timing decides it) and each gets bitwise the answer it gets alone."""
    from mentor.serve.engine import ScoringEngine

    model, tokenizer = load_model(tiny_dirs["teacher"]), load_tokenizer(tiny_dirs["teacher"])
    engine = ScoringEngine(model, tokenizer.pad_token_id)
    requests = [[[5, 6, 7, 8, 9, 10, 11]], [[3, 4], [12, 13, 14, 15, 16, 17, 18, 19, 20]], [[8, 9, 10]]]
    try:
        alone = [engine.submit(r).result(timeout=120) for r in requests]
        release, real_score = threading.Event(), engine.score
        calls = []

        def held(sequences, *options):
            calls.append(len(sequences))
            release.wait(timeout=120)
            return real_score(sequences, *options)

        engine.score = held
        futures = [engine.submit(r) for r in requests]  # all queued while the worker waits on the first
        release.set()
        together = [f.result(timeout=120) for f in futures]
    finally:
        engine.close()
    assert calls == [len(r) for r in requests]  # one forward per request, never merged
    for a, b in zip(alone, together):
        assert [s.logprobs for s in a] == [s.logprobs for s in b]
        assert [(s.next_token, s.next_logprob) for s in a] == [(s.next_token, s.next_logprob) for s in b]


def test_non_finite_weights_never_become_a_final_model(tiny_dirs, tmp_path):
    """The last guard: whatever made them so, weights with NaN/inf are not written as final/ (one line)."""
    model = load_model(tiny_dirs["student"])
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = math.inf
    run = RunDirectory(tmp_path / "run")
    with pytest.raises(
        MentorError,
        match=r"^the trained weights are not finite \(\S+ holds NaN or inf\), so no "
        r"final model was written: lower --learning-rate",
    ):
        run.save_final(model, load_tokenizer(tiny_dirs["student"]))
    assert not run.path.exists() or not any(run.path.iterdir())


def test_a_run_whose_every_step_was_skipped_writes_no_final(tiny_dirs, tmp_path, prompts_file):
    """Every update non-finite (a teacher whose logits overflow, fewer steps than --max-bad-steps): the weights
    never moved, so the run ends with one line instead of a final/ that would pass for a trained model."""
    from mentor.recipes.distill import run_distill

    teacher = load_model(tiny_dirs["teacher"])
    with torch.no_grad():
        teacher.model.norm.weight.mul_(3e38)  # finite, but the logits overflow: every log-prob is NaN
    config = DistillConfig(
        student=tiny_dirs["student"],
        teacher=tiny_dirs["teacher"],
        prompts=prompts_file,
        output_dir=str(tmp_path / "run"),
        steps=2,
        batch_size=2,
        group_size=2,
        max_new_tokens=4,
        max_bad_steps=5,
        quiet=True,
    )
    with pytest.raises(
        MentorError,
        match=r"^every update of the 2 steps had a non-finite loss or gradient, so the "
        r"weights never changed and no final model was written",
    ):
        run_distill(config, teacher=teacher, teacher_tokenizer=load_tokenizer(tiny_dirs["teacher"]))
    assert not (tmp_path / "run" / "final").exists()


def test_a_utf16_config_with_its_byte_order_mark_is_read(tmp_path):
    """UTF-16 is refused only without a byte-order mark (then it is not text YAML can read): with one it loads."""
    from mentor.config import build_config

    path = tmp_path / "opd.yaml"
    path.write_bytes("learning_rate: 0.002\nsteps: 7\n".encode("utf-16"))  # BOM first
    config = build_config(DistillConfig, yaml_path=str(path), student="s", teacher="t", task="arithmetic")
    assert (config.learning_rate, config.steps) == (0.002, 7)
