"""Peer benchmark: TRL's ``DistillationTrainer`` (beta=1: reverse KL, on-policy) vs mentor's OPD, on this CPU.

    pip install -e ".[bench]"        # trl, only for this benchmark
    python experiments/vs_trl.py [--steps 12] [--rounds 2] [--batch-size 8] [--max-new-tokens 32]

Same tiny Qwen3 student and teacher (built here, saved and reloaded like a user's models), same arithmetic
prompts, same number of prompts per step, one completion per prompt, same max new tokens, temperature 1,
learning rate, float32, 2 threads. What differs is each library's method as its users run it: TRL trains on
the full-vocabulary reverse KL of every completion position; mentor on the sampled-token reverse KL (the
Thinking Machines recipe). Neither uses gradient checkpointing (the models are tiny).

Each run is a fresh process; TRL and mentor runs alternate (``--rounds`` of each) so machine load hits both
alike. Time and memory are measured in separate runs, because measuring memory well slows a run down:
- timing runs use the default allocator, as users run: median seconds per optimizer step (first step dropped:
  warm-up);
- memory runs (``--memory-steps`` steps) fix glibc's mmap threshold and sample the resident size every
  millisecond: peak above the process's size before the trainer is built (models already loaded).
Ratios are TRL / mentor.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# glibc raises its mmap threshold after big frees, after which freed tensors stay in the heap and the
# resident size stops tracking live memory. A fixed threshold keeps big tensors mmapped (returned on free),
# so the sampled peak is the live peak. It also makes every big allocation fault in fresh pages, which costs
# both libraries a lot of time (and TRL, which allocates more, more): so memory runs only.
FIXED_MMAP_ENV = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")

STUDENT = dict(hidden_size=64, num_layers=4, num_heads=4)
TEACHER = dict(hidden_size=128, num_layers=4, num_heads=4)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakRSS:
    """Samples the resident set size every millisecond in a thread; ``peak`` is the highest seen.

    Disabled (``enabled=False``) in timing runs: the sampling thread competes for the GIL.
    """

    def __init__(self, enabled: bool = True):
        self.peak, self._stop = _rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True) if enabled else None

    def _run(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_bytes())

    def __enter__(self):
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread:
            self._stop.set()
            self._thread.join()


def wide_alphabet(vocab: int) -> str:
    """The arithmetic characters, then other code points until the tokenizer has ``vocab`` entries."""
    from mentor.models.tiny import DEFAULT_ALPHABET, SPECIAL_TOKENS

    chars, code = list(dict.fromkeys(DEFAULT_ALPHABET)), 0x100
    while len(chars) + len(SPECIAL_TOKENS) < vocab:
        if not 0xD800 <= code <= 0xDFFF:  # surrogates are not characters
            chars.append(chr(code))
        code += 1
    return "".join(chars)


def build_models(root: Path, prompts: int, vocab: int = 0) -> dict:
    from mentor.models.tiny import build_char_tokenizer, build_tiny_model, save_tiny, tiny_config
    from mentor.tasks.registry import get_task

    paths = {}
    alphabet = wide_alphabet(vocab) if vocab else None
    for name, arch, seed in (("student", STUDENT, 2), ("teacher", TEACHER, 1)):
        tokenizer = build_char_tokenizer(alphabet) if alphabet else build_char_tokenizer()
        config = tiny_config(
            "qwen3",
            len(tokenizer),
            arch["hidden_size"],
            arch["num_layers"],
            arch["num_heads"],
            tokenizer=tokenizer,
            max_positions=128,
        )
        save_tiny(build_tiny_model(config, seed=seed), tokenizer, root / name)
        paths[name] = str(root / name)
    problems = get_task("arithmetic").train_problems(prompts, 0)
    paths["prompts"] = str(root / "prompts.jsonl")
    Path(paths["prompts"]).write_text("".join(json.dumps({"prompt": p.prompt}) + "\n" for p in problems))
    return paths


def run_mentor(paths: dict, args) -> dict:
    from mentor.config import DistillConfig
    from mentor.recipes.distill import run_distill

    config = DistillConfig(
        student=paths["student"],
        teacher=paths["teacher"],
        prompts=paths["prompts"],
        output_dir=str(Path(paths["work"]) / "mentor"),
        steps=args.steps,
        batch_size=args.batch_size,
        group_size=1,
        max_new_tokens=args.max_new_tokens,
        learning_rate=args.learning_rate,
        temperature=1.0,
        quiet=True,
        overwrite=True,
    )
    student, teacher, tokenizer = _load(paths)
    with PeakRSS(args.measure == "memory") as memory:
        baseline = _rss_bytes()
        _, history = run_distill(
            config, student=student, tokenizer=tokenizer, teacher=teacher, teacher_tokenizer=tokenizer
        )
    steps = [r["time_step"] for r in history if "time_step" in r]
    return {"step_seconds": steps, "peak_mib": (memory.peak - baseline) / 2**20}


def run_trl(paths: dict, args) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DistillationConfig, DistillationTrainer

    prompts = [json.loads(line)["prompt"] for line in Path(paths["prompts"]).read_text().splitlines()]
    student, teacher, tokenizer = _load(paths)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self._start = [], 0.0

        def on_step_begin(self, *a, **k):
            self._start = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.seconds.append(time.perf_counter() - self._start)

    timer = StepTimer()
    config = DistillationConfig(
        output_dir=str(Path(paths["work"]) / "trl"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        beta=1.0,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    with PeakRSS(args.measure == "memory") as memory:
        baseline = _rss_bytes()
        trainer = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=config,
            train_dataset=Dataset.from_dict({"prompt": prompts}),
            processing_class=tokenizer,
            callbacks=[timer],
        )
        trainer.train()
    return {"step_seconds": timer.seconds, "peak_mib": (memory.peak - baseline) / 2**20}


def _load(paths: dict):
    from mentor.models.loading import load_model, load_tokenizer

    return load_model(paths["student"]), load_model(paths["teacher"]), load_tokenizer(paths["student"])


def child(which: str, paths: dict, args) -> None:
    import torch

    from mentor.recipes.common import quiet_transformers

    quiet_transformers()
    torch.set_num_threads(2)
    result = (run_trl if which == "trl" else run_mentor)(paths, args)
    print("RESULT " + json.dumps(result), flush=True)


def run_child(which: str, measure: str, paths: dict, args, steps: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        which,
        f"--measure={measure}",
        "--paths",
        json.dumps(paths),
        f"--steps={steps}",
        f"--batch-size={args.batch_size}",
        f"--max-new-tokens={args.max_new_tokens}",
        f"--learning-rate={args.learning_rate}",
    ]
    env = FIXED_MMAP_ENV if measure == "memory" else None
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"{which} {measure} run failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps of each timing run")
    parser.add_argument("--memory-steps", type=int, default=4, help="optimizer steps of each memory run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument(
        "--vocab",
        type=int,
        default=151_936,
        help="tokenizer size (Qwen3's by default, so heads and distributions cost what they do in "
        "practice); 0: the 60-character arithmetic tokenizer",
    )
    parser.add_argument("--child", choices=("trl", "mentor"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=("time", "memory"), default="time", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, json.loads(args.paths), args)
        return
    seconds: dict[str, list[float]] = {"trl": [], "mentor": []}
    peaks: dict[str, list[float]] = {"trl": [], "mentor": []}
    with tempfile.TemporaryDirectory(prefix="mentor-vs-trl-") as tmp:
        paths = build_models(Path(tmp), prompts=max(64, args.steps * args.batch_size), vocab=args.vocab)
        for round_index in range(args.rounds):
            for which in ("trl", "mentor"):
                paths["work"] = str(Path(tmp) / f"{which}{round_index}")
                timed = run_child(which, "time", paths, args, args.steps)["step_seconds"][1:]
                peak = run_child(which, "memory", paths, args, args.memory_steps)["peak_mib"]
                seconds[which] += timed
                peaks[which].append(peak)
                print(
                    f"round {round_index + 1} {which:>6}: median {statistics.median(timed):.3f} s/step, "
                    f"peak +{peak:.0f} MiB",
                    flush=True,
                )
    summary = {
        which: {"median_s_per_step": statistics.median(seconds[which]), "peak_mib": statistics.median(peaks[which])}
        for which in seconds
    }
    speed = summary["trl"]["median_s_per_step"] / summary["mentor"]["median_s_per_step"]
    memory = summary["trl"]["peak_mib"] / summary["mentor"]["peak_mib"]
    print(
        f"\nvocab {args.vocab or 'arithmetic'}, batch {args.batch_size} prompts x 1 completion, "
        f"{args.max_new_tokens} new tokens, {args.steps} steps, {args.rounds} rounds each"
    )
    print(
        f"TRL DistillationTrainer (beta=1): {summary['trl']['median_s_per_step']:.3f} s/step, "
        f"peak +{summary['trl']['peak_mib']:.0f} MiB"
    )
    print(
        f"mentor OPD:                       {summary['mentor']['median_s_per_step']:.3f} s/step, "
        f"peak +{summary['mentor']['peak_mib']:.0f} MiB"
    )
    print(f"mentor is {speed:.2f}x faster per step and uses {memory:.2f}x less peak memory (TRL / mentor)")


if __name__ == "__main__":
    main()
