"""Issue 20, A1: RL vs OPD in steps on SmolLM2-135M-Instruct, on the pilot's task (mul1).

The protocol is ``protocol.md`` beside this file, fixed before the first run. RL from S0 to a plateau gives
T_RL; OPD from S0 with T_RL as its teacher; the steps each needs to reach T_RL's plateau accuracy on the
validation problems. Both run through mentor's own commands on data files a user would write: the training
prompts as ``{"prompt", "answer"}`` records (``--prompts``), the validation problems as a GSM8K-schema file
(``--task gsm8k:val.jsonl``), graded by mentor's numeric grader.

RL runs to its plateau in chunks of ``eval_every`` steps, each resuming the last (``--steps`` may grow on a
resume): after each chunk the plateau rule reads the validation curve in ``metrics.jsonl``. Every stage is
recorded in ``state.json`` as it finishes, and running the same command again skips the finished ones.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m experiments.rl_vs_opd.run --quiet
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m experiments.rl_vs_opd.run --quick --out runs/rl_vs_opd_quick
    mentor bench rl-vs-opd [--quick]  # the same
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from experiments.rl_vs_opd.pilot import arithmetic

HERE = Path(__file__).resolve().parent
PROTOCOL_VERSION = 2
PLATEAU_GAIN = 0.03  # the best validation accuracy rising less than this over two evaluations: a plateau


@dataclass(frozen=True)
class Scale:
    val: int  # validation problems (the pilot's, seed 1)
    test: int  # test problems (seed 3)
    prompts: int  # prompts per step
    group: int  # samples per prompt
    new_tokens: int
    rl_min_steps: int  # the plateau rule applies from here on
    rl_max_steps: int
    opd_steps: int
    eval_every: int
    warmup: int
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...]


FULL = Scale(100, 300, 4, 4, 48, 20, 40, 20, 5, 3, (1e-5, 3e-5), (0, 1))
QUICK = Scale(20, 30, 2, 4, 32, 10, 10, 5, 5, 1, (1e-5, 3e-5), (0, 1))


# --- data -----------------------------------------------------------------------------------------------------
def mul1_space() -> list[dict]:
    """Every mul1 problem (A in 10..99, B in 2..9): 720 of them."""
    return [
        {"prompt": f"What is {a} * {b}? Answer with the number only.", "answer": str(a * b)}
        for a in range(10, 100)
        for b in range(2, 10)
    ]


def splits(scale: Scale) -> dict[str, list[dict]]:
    """Validation: the pilot's problems (seed 1); test: ``scale.test`` others (seed 3); training: all the rest in
    a seeded order (seed 2). Disjoint by prompt."""
    val = arithmetic("mul1", scale.val, seed=1)
    held = {p["prompt"] for p in val}
    rest = [p for p in mul1_space() if p["prompt"] not in held]
    random.Random(3).shuffle(rest)
    test, train = rest[: scale.test], rest[scale.test :]
    random.Random(2).shuffle(train)
    return {"val": val, "test": test, "train": train}


def write_data(scale: Scale, directory: Path) -> dict[str, Path]:
    """The training prompts as mentor's ``prompt``/``answer`` records; validation and test as GSM8K records, so
    ``--task gsm8k:FILE`` evaluates them with the numeric grader."""
    directory.mkdir(parents=True, exist_ok=True)
    parts = splits(scale)
    paths = {name: directory / f"{name}.jsonl" for name in parts}
    paths["train"].write_text("".join(json.dumps(p) + "\n" for p in parts["train"]))
    for name in ("val", "test"):
        records = [{"question": p["prompt"], "answer": f"#### {p['answer']}"} for p in parts[name]]
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in records))
    return paths


# --- the plateau rule and the curves --------------------------------------------------------------------------
def plateau_step(curve: list[tuple[int, float]], min_step: int) -> int | None:
    """The first evaluation at ``min_step`` or later over whose last two evaluations the best validation accuracy
    so far rose by less than ``PLATEAU_GAIN`` (protocol v2); None: still rising."""
    best = [max(accuracy for _, accuracy in curve[: i + 1]) for i in range(len(curve))]
    for i in range(2, len(curve)):
        if curve[i][0] >= min_step and best[i] - best[i - 2] < PLATEAU_GAIN:
            return curve[i][0]
    return None


def first_step_reaching(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((step for step, accuracy in curve if accuracy >= target - 1e-9), None)


def validation_curve(run: Path) -> list[tuple[int, float]]:
    """(step, accuracy) of every evaluation a run logged."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["accuracy"]) for r in records if "accuracy" in r]


def last_record(run: Path) -> dict:
    lines = [line for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])


# --- the runs -------------------------------------------------------------------------------------------------
def common(scale: Scale, data: dict[str, Path], out: Path, lr: float, seed: int, sampler: str, quiet: bool) -> dict:
    return dict(
        output_dir=str(out),
        prompts=str(data["train"]),
        task=f"gsm8k:{data['val']}",
        eval_size=scale.val,
        eval_every=scale.eval_every,
        chat_template=True,
        batch_size=scale.prompts,
        group_size=scale.group,
        learning_rate=lr,
        lr_schedule="constant",
        warmup_steps=scale.warmup,
        max_new_tokens=scale.new_tokens,
        temperature=1.0,
        seed=seed,
        sampler=sampler,
        save_every=scale.eval_every,
        keep_checkpoints=1,
        quiet=quiet,
    )


def rl_to_plateau(start: Path, out: Path, scale: Scale, data: dict, lr: float, seed: int, sampler: str, quiet: bool):
    """RL in chunks of ``eval_every`` steps until the plateau rule fires or ``rl_max_steps``; its final model is
    T_RL. Returns the validation curve and the plateau step."""
    from mentor.config import RLConfig
    from mentor.recipes.rl import run_rl

    curve = validation_curve(out) if (out / "metrics.jsonl").exists() else []
    while True:
        done_steps = curve[-1][0] if curve else 0
        stop = plateau_step(curve, scale.rl_min_steps)
        if stop is not None or done_steps >= scale.rl_max_steps:
            return curve, stop if stop is not None else done_steps
        config = RLConfig(
            model=str(start),
            grader="numeric",
            kl_coef=0.0,
            steps=done_steps + scale.eval_every,
            resume=done_steps > 0,
            **common(scale, data, out, lr, seed, sampler, quiet),
        )
        run_rl(config)
        curve = validation_curve(out)


def opd(start: Path, teacher: Path, out: Path, scale: Scale, data: dict, lr: float, seed: int, sampler: str, quiet):
    from mentor.config import DistillConfig
    from mentor.recipes.distill import run_distill

    config = DistillConfig(
        student=str(start),
        teacher=str(teacher),
        divergence="sampled",
        kl_coef=1.0,
        steps=scale.opd_steps,
        **common(scale, data, out, lr, seed, sampler, quiet),
    )
    run_distill(config)
    return validation_curve(out)


def test_accuracy(model_path: Path, test_file: Path, scale: Scale) -> dict:
    """Greedy accuracy on the test problems, with its Wilson interval."""
    import torch

    from mentor.evaluation.accuracy import evaluate
    from mentor.evaluation.intervals import wilson_interval
    from mentor.models.loading import load_model, load_tokenizer
    from mentor.tasks.loaders import FileTask

    task = FileTask("gsm8k", test_file)
    tokenizer, model = load_tokenizer(str(model_path)), load_model(str(model_path)).eval()
    with torch.no_grad():
        result = evaluate(model, tokenizer, task, task.problems, scale.new_tokens, batch_size=100, chat_template=True)
    correct = sum(result.correct)
    return {
        "accuracy": result.accuracy,
        "correct": correct,
        "n": len(task.problems),
        "ci": wilson_interval(correct, len(task.problems)),
    }


# --- the experiment -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def timed(timings: dict, stage: str):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    timings[stage] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def convert_start(model: str, start: Path) -> None:
    """S0 as a model directory (a GGUF dequantized once), which both samplers and every run load."""
    from mentor.models.loading import load_model, load_tokenizer, save_pretrained

    if not (start / "config.json").exists():
        save_pretrained(load_model(model), load_tokenizer(model), start)


def name(method: str, lr: float, seed: int) -> str:
    return f"{method}_lr{lr:g}_seed{seed}"


def run(out: Path, quick: bool, sampler: str = "hf", quiet: bool = True, model: str | None = None) -> dict:
    from experiments.continual.run import REAL_MODEL
    from mentor.recipes.common import quiet_transformers

    quiet_transformers()
    scale = QUICK if quick else FULL
    if model is None and not REAL_MODEL.exists():
        from experiments.continual.run import FETCH_MODEL
        from mentor.errors import MentorError

        raise MentorError(f"model {REAL_MODEL} not found: pass --model, or fetch SmolLM2-135M-Instruct: {FETCH_MODEL}")
    state_file = out / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"timings": {}, "runs": {}, "test": {}}
    state.update(scale=asdict(scale), quick=quick, sampler=sampler, protocol_version=PROTOCOL_VERSION)
    runs, timings, tests = state["runs"], state["timings"], state["test"]

    def save() -> None:
        state_file.write_text(json.dumps(state, indent=1))

    start = out / "s0"
    with timed(timings, "convert S0") if not (start / "config.json").exists() else contextlib.nullcontext():
        convert_start(str(model or REAL_MODEL), start)  # a model that does not load leaves --out as it was
    data = write_data(scale, out / "data")
    if "s0" not in tests:
        with timed(timings, "test s0"):
            tests["s0"] = test_accuracy(start, data["test"], scale)
        save()

    def rl(lr: float, seed: int) -> dict:
        key = name("rl", lr, seed)
        if key not in runs:
            with timed(timings, key):
                curve, stop = rl_to_plateau(start, out / key, scale, data, lr, seed, sampler, quiet)
            runs[key] = {
                "curve": curve,
                "plateau_step": stop,
                "plateau_accuracy": dict(curve)[stop],
                "flops": last_record(out / key).get("flops_total"),
            }
            save()
        return runs[key]

    def distill(lr: float, seed: int, teacher_key: str) -> dict:
        key = name("opd", lr, seed)
        if key not in runs:
            with timed(timings, key):
                curve = opd(start, out / teacher_key / "final", out / key, scale, data, lr, seed, sampler, quiet)
            target = runs[teacher_key]["plateau_accuracy"]
            runs[key] = {
                "curve": curve,
                "teacher": teacher_key,
                "target": target,
                "steps_to_target": first_step_reaching(curve, target),
                "flops": last_record(out / key).get("flops_total"),
            }
            save()
        return runs[key]

    first, *others = scale.seeds
    rl_grid = {lr: rl(lr, first) for lr in scale.learning_rates}
    rl_lr = max(scale.learning_rates, key=lambda lr: rl_grid[lr]["plateau_accuracy"])  # ties: the smaller rate
    teacher0 = name("rl", rl_lr, first)
    opd_grid = {lr: distill(lr, first, teacher0) for lr in scale.learning_rates}
    opd_lr = choose_opd_rate(opd_grid, scale.learning_rates)
    state["chosen"] = {"rl": rl_lr, "opd": opd_lr}
    save()
    for seed in others:
        rl(rl_lr, seed)
        distill(opd_lr, seed, name("rl", rl_lr, seed))

    for seed in scale.seeds:
        for key in (name("rl", rl_lr, seed), name("opd", opd_lr, seed)):
            if key not in tests:
                with timed(timings, f"test {key}"):
                    tests[key] = test_accuracy(out / key / "final", data["test"], scale)
                save()
    from experiments.rl_vs_opd.report import write_report

    write_report(state, out)
    return state


def choose_opd_rate(grid: dict[float, dict], rates: tuple[float, ...]) -> float:
    """The rate that first reaches T_RL's validation plateau; if neither does, the higher final accuracy (ties:
    the first rate listed)."""
    reached = [lr for lr in rates if grid[lr]["steps_to_target"] is not None]
    if reached:
        return min(reached, key=lambda lr: grid[lr]["steps_to_target"])
    return max(rates, key=lambda lr: grid[lr]["curve"][-1][1])


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", default="runs/rl_vs_opd", help="where runs, state.json and the report go")
    parser.add_argument("--quick", action="store_true", help="the same protocol at smaller sizes (minutes)")
    parser.add_argument(
        "--sampler", default="hf", choices=("hf", "vllm"), help="who samples the student (vllm: run from .venv-vllm)"
    )
    parser.add_argument("--model", default=None, help="S0 (default: the real SmolLM2-135M-Instruct GGUF)")
    parser.add_argument("--quiet", action="store_true", help="no per-step progress")
    return parser


def run_from_args(args: argparse.Namespace) -> dict:
    from mentor.errors import MentorError

    try:
        return run(Path(args.out), args.quick, args.sampler, args.quiet, args.model)
    except MentorError as error:
        raise SystemExit(f"error: {error}") from None


def main(argv: list[str] | None = None) -> None:
    run_from_args(add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args(argv))


if __name__ == "__main__":
    main()
