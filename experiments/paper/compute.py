"""Experiment A2 of ``mentor bench paper``: compute to an accuracy, SFT on teacher samples against OPD.

Protocol (fixed before any run; the numbers are ``PaperScale``'s fields):

1. **Teacher**: a 4x128 Qwen3 (4x the student's weights), SFT on ground-truth ``chains`` for
   ``teacher_sft_steps`` steps (cosine to 0). It is sampled at **temperature 1**, so its samples carry its
   own errors: its greedy and its temperature-1 accuracy are both reported (gate: temperature-1 accuracy
   below 100%, i.e. SFT on its samples is not SFT on the ground truth).
2. **SFT on teacher samples** from A1's annealed start S0 (the "base": per-step skill, few whole chains) at
   ``n0``, ``2 n0`` and ``4 n0`` samples: one temperature-1 completion per training prompt, drawn once for
   4 n0 prompts by ``mentor.recipes.sft.teacher_examples`` (the smaller sets are its first n0 / 2 n0); one
   pass, 64 sequences a step, lr ``sft_lr`` with warmup and a cosine decay to 0, so each point is an
   annealed run of its size. Fit: accuracy = a + b ln(samples), least squares on the three points.
3. **OPD** from the ``n0`` checkpoint with the same teacher (temperature 1, 16 prompts x 4 samples a step,
   lr ``compute_opd_lr`` with warmup then constant) for ``compute_opd_steps`` steps. OPD's accuracy: its
   final evaluation on ``test_size`` problems.
4. **FLOPs** from the run ledgers (forward 2N, backward 4N per token; teacher sampling for SFT counted).
   SFT's samples to reach OPD's accuracy, n* = exp((acc_OPD - a) / b), by the fit (an extrapolation when
   n* > 4 n0, said so). Both methods are counted from the shared ``n0`` checkpoint: SFT's cost is that of its
   n* - n0 further samples (per-sample cost measured on the 4 n0 run), OPD's that of its steps.
   Ratios, as the paper: student FLOPs only, and teacher + student.
5. **95% intervals**: Wilson for accuracies; for n* and the ratios a parametric bootstrap (the four
   accuracies redrawn as Binomial(test_size, accuracy) / test_size, 2,000 replicates, percentile). One seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from experiments.paper.steps import MAX_NEW_TOKENS, TASK, count, curve, finish_plot, fresh_model, pct, wait_for_start
from mentor.config import DistillConfig, SFTConfig
from mentor.evaluation.accuracy import evaluate
from mentor.evaluation.intervals import binomial_bootstrap, percentile_interval, wilson_interval
from mentor.models.loading import load_model, load_tokenizer
from mentor.recipes.distill import run_distill
from mentor.recipes.sft import run_sft, teacher_examples
from mentor.tasks.registry import get_task
from mentor.train.progress import console

TEACHER_ARCH = dict(hidden_size=128, num_layers=4, num_heads=4)
SEQUENCES_PER_STEP = 64


def experiment_compute(out: Path, scale, quiet: bool) -> dict:
    out = out / "A2"
    console.rule("A2: compute. SFT on a stochastic teacher's samples at n0, 2n0, 4n0 (log-linear) vs OPD from n0")
    teacher = _train(
        out,
        "teacher",
        TEACHER_ARCH,
        scale.teacher_sft_steps,
        scale.start_lr,
        scale.warmup_steps,
        quiet,
        seed=0,
        data=dict(task=TASK, train_size=scale.teacher_sft_steps * SEQUENCES_PER_STEP),
    )
    teacher_profile = teacher_accuracy(teacher, scale.test_size)
    start = shared_start(out.parent, scale, quiet)
    examples, teacher_flops = teacher_samples(out / "teacher_samples", start, teacher, 4 * scale.samples_n0)
    sft = {}
    for multiple in (1, 2, 4):
        samples = multiple * scale.samples_n0
        path, history = _sft(
            out / f"sft_{multiple}n0",
            start,
            samples // SEQUENCES_PER_STEP,
            scale.sft_lr,
            scale.warmup_steps,
            scale.test_size,
            quiet,
            dict(task=TASK, data="(teacher samples)"),
            examples=examples[:samples],
        )
        final = history[-1]
        # the teacher's sampling cost of these samples, paid before step 1 (counted as the ledger would)
        sft[samples] = {
            "path": str(path),
            "accuracy": final["accuracy"],
            "steps": final["step"],
            "student_flops": final["flops_student"],
            "teacher_flops": teacher_flops * samples / len(examples),
        }
    n0_checkpoint = sft[scale.samples_n0]["path"]
    opd = DistillConfig(
        student=n0_checkpoint,
        teacher=str(teacher),
        task=TASK,
        output_dir=str(out / "opd_from_n0"),
        steps=scale.compute_opd_steps,
        batch_size=16,
        group_size=4,
        learning_rate=scale.compute_opd_lr,
        warmup_steps=min(scale.warmup_steps, scale.compute_opd_steps),
        eval_every=max(1, scale.compute_opd_steps // 4),
        eval_size=scale.test_size,
        max_new_tokens=MAX_NEW_TOKENS,
        seed=0,
        overwrite=True,
        quiet=quiet,
    )
    _, opd_history = run_distill(opd)
    opd_result = {
        "curve": curve(opd_history),
        "student_flops": opd_history[-1]["flops_student"],
        "total_flops": opd_history[-1]["flops_total"],
        "steps": opd_history[-1]["step"],
    }
    return {
        "teacher": teacher_profile,
        "sft": {str(n): v for n, v in sft.items()},
        "opd": opd_result,
        "analysis": analyse(sft, opd_result, scale.samples_n0, scale.test_size),
    }


def _sft(
    out: Path,
    init: Path,
    steps: int,
    lr: float,
    warmup: int,
    eval_size: int,
    quiet: bool,
    data: dict,
    seed: int = 3,
    examples: list | None = None,
) -> tuple[Path, list[dict]]:
    """One annealed SFT run (warmup, cosine to 0), evaluated before and after."""
    config = SFTConfig(
        model=str(init),
        output_dir=str(out),
        steps=steps,
        batch_size=SEQUENCES_PER_STEP,
        group_size=1,
        learning_rate=lr,
        lr_schedule="cosine",
        warmup_steps=min(warmup, steps - 1),
        adam_beta2=0.99,
        eval_size=eval_size,
        max_new_tokens=MAX_NEW_TOKENS,
        seed=seed,
        overwrite=True,
        quiet=quiet,
        **data,
    )
    trainer, history = run_sft(config, examples=examples)
    return trainer.run.path / "final", history


def shared_start(out: Path, scale, quiet: bool) -> Path:
    """A1's annealed start S0: chosen by A1 (in this process or another one), or here by the same rule."""
    return wait_for_start(out / "A1", scale, quiet)


def teacher_samples(out: Path, student: Path, teacher: Path, n: int) -> tuple[list, float]:
    """``n`` temperature-1 teacher completions of training prompts (cached in ``out``) and their sampling FLOPs."""
    config = SFTConfig(
        model=str(student),
        task=TASK,
        output_dir=str(out),
        from_teacher=str(teacher),
        teacher_samples=1,
        teacher_prompts=n,
        teacher_temperature=1.0,
        max_new_tokens=MAX_NEW_TOKENS,
        overwrite=True,
        quiet=True,
    )
    tokenizer = load_tokenizer(str(student))
    examples, offline = teacher_examples(config, tokenizer, load_model(str(student)), get_task(TASK))
    return examples, offline["flops_teacher_sample"]


def _train(
    out: Path, name: str, arch: dict, steps: int, lr: float, warmup: int, quiet: bool, seed: int, data: dict
) -> Path:
    init = fresh_model(out / f"{name}_init", arch, seed)
    return _sft(out / name, init, steps, lr, warmup, 100, quiet, data, seed)[0]


def teacher_accuracy(path: Path, size: int) -> dict:
    """Greedy and temperature-1 accuracy: the latter is what SFT's samples are worth."""
    task, model, tokenizer = get_task(TASK), load_model(str(path)), load_tokenizer(str(path))
    problems = task.test_problems(size)
    greedy = evaluate(model, tokenizer, task, problems, MAX_NEW_TOKENS)
    sampled = evaluate(model, tokenizer, task, problems, MAX_NEW_TOKENS, greedy=False, temperature=1.0)
    return {
        "greedy": greedy.accuracy,
        "greedy_ci": wilson_interval(sum(greedy.correct), size),
        "temperature_1": sampled.accuracy,
        "temperature_1_ci": wilson_interval(sum(sampled.correct), size),
        "size": size,
    }


# --- analysis: the log-linear fit and the FLOP ratios ---------------------------------------------------
def log_linear_fit(samples: list[int], accuracies: np.ndarray) -> tuple[float, float]:
    """(a, b) of accuracy = a + b ln(samples), least squares."""
    b, a = np.polyfit(np.log(np.asarray(samples, dtype=float)), accuracies, 1)
    return float(a), float(b)


def samples_to_reach(a: float, b: float, accuracy: float) -> float:
    """n* on the fitted line; inf when the fit does not rise (SFT would never get there)."""
    if b <= 0:
        return math.inf
    return float(math.exp(min((accuracy - a) / b, 700.0)))


def analyse(sft: dict, opd: dict, n0: int, test_size: int, replicates: int = 2000) -> dict:
    samples = sorted(sft)
    biggest = sft[samples[-1]]
    per_sample_student = biggest["student_flops"] / samples[-1]
    per_sample_teacher = biggest["teacher_flops"] / samples[-1]

    def statistics(accuracies: np.ndarray) -> tuple[float, float, float]:
        a, b = log_linear_fit(samples, accuracies[:-1])
        extra = max(samples_to_reach(a, b, accuracies[-1]) - n0, 0.0)  # SFT samples beyond the shared n0
        return (
            extra + n0,
            extra * per_sample_student / opd["student_flops"],
            extra * (per_sample_student + per_sample_teacher) / opd["total_flops"],
        )

    accuracies = [sft[n]["accuracy"] for n in samples] + [opd["curve"][-1]["accuracy"]]
    a, b = log_linear_fit(samples, np.array(accuracies[:-1]))
    n_star, student_ratio, total_ratio = statistics(np.array(accuracies))
    boot = binomial_bootstrap(accuracies, [test_size] * len(accuracies), statistics, replicates).T
    return {
        "fit": {"a": a, "b_per_ln_sample": b, "points": {str(n): sft[n]["accuracy"] for n in samples}},
        "opd_accuracy": accuracies[-1],
        "opd_ci": wilson_interval(round(accuracies[-1] * test_size), test_size),
        "sft_ci": {str(n): wilson_interval(round(sft[n]["accuracy"] * test_size), test_size) for n in samples},
        "samples_to_opd": n_star,
        "samples_ci": percentile_interval(boot[0]),
        "extrapolated": n_star > samples[-1],
        "sft_flops_to_opd": {
            "student": (n_star - n0) * per_sample_student,
            "teacher": (n_star - n0) * per_sample_teacher,
        },
        "student_ratio": student_ratio,
        "student_ratio_ci": percentile_interval(boot[1]),
        "total_ratio": total_ratio,
        "total_ratio_ci": percentile_interval(boot[2]),
        "interval": "parametric binomial bootstrap, 2,000 replicates, percentile",
    }


# --- report --------------------------------------------------------------------------------------------
def compute_tables(a2: dict) -> dict[str, tuple[str, list[str], list[list[str]]]]:
    teacher, analysis, opd = a2["teacher"], a2["analysis"], a2["opd"]
    model_rows = [
        ["teacher 4x128, greedy", "", pct(teacher["greedy"], teacher["greedy_ci"]), "", ""],
        [
            "teacher 4x128, temperature 1 (what SFT learns from)",
            "",
            pct(teacher["temperature_1"], teacher["temperature_1_ci"]),
            "",
            "",
        ],
    ]
    for n, point in a2["sft"].items():
        model_rows.append(
            [
                f"SFT on {int(n):,} teacher samples",
                str(point["steps"]),
                pct(point["accuracy"], analysis["sft_ci"][n]),
                f"{point['student_flops']:.2e}",
                f"{point['teacher_flops']:.2e}",
            ]
        )
    n0 = min(a2["sft"], key=int)
    opd_teacher = opd["total_flops"] - opd["student_flops"]
    model_rows.append(
        [
            f"OPD from the {int(n0):,}-sample checkpoint",
            str(opd["steps"]),
            pct(analysis["opd_accuracy"], analysis["opd_ci"]),
            f"{opd['student_flops']:.2e}",
            f"{opd_teacher:.2e}",
        ]
    )
    fit = analysis["fit"]
    start = a2["sft"][n0]["accuracy"]
    extrapolated = " (extrapolated)" if analysis["extrapolated"] else ""
    ratio_rows = [
        [
            f"SFT samples to OPD's accuracy (fit: {fit['a']:.3f} + {fit['b_per_ln_sample']:.3f} ln n){extrapolated}",
            count(analysis["samples_to_opd"], tuple(analysis["samples_ci"])),
        ],
        [
            "SFT / OPD FLOPs from the n0 checkpoint, student only (paper: ~9x)",
            count(analysis["student_ratio"], tuple(analysis["student_ratio_ci"]), "x"),
        ],
        [
            "SFT / OPD FLOPs from the n0 checkpoint, teacher + student (paper: ~30x)",
            count(analysis["total_ratio"], tuple(analysis["total_ratio_ci"]), "x"),
        ],
    ]
    return {
        "a2_models": (
            "A2: SFT on a stochastic teacher's samples vs OPD (test split, Wilson 95%)",
            ["model", "steps", "accuracy", "student FLOPs", "teacher FLOPs"],
            model_rows,
        ),
        "a2_ratios": (
            "A2: the paper's FLOP ratios by the log-linear fit (95% bootstrap intervals)"
            + (
                f". OPD ended below its own start (the n0 checkpoint, {pct(start)}): SFT needs no further "
                "sample to match it, so every ratio is 0 (OPD spent FLOPs to lose accuracy)"
                if analysis["opd_accuracy"] < start
                else ""
            ),
            ["quantity", "measured"],
            ratio_rows,
        ),
    }


def plot_compute(a2: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4))
    samples = sorted(int(n) for n in a2["sft"])
    flops = [a2["sft"][str(n)]["student_flops"] + a2["sft"][str(n)]["teacher_flops"] for n in samples]
    axis.plot(flops, [a2["sft"][str(n)]["accuracy"] for n in samples], "o", label="SFT (n0, 2n0, 4n0 samples)")
    fit = a2["analysis"]["fit"]
    per_sample = flops[-1] / samples[-1]
    grid = np.geomspace(samples[0], max(samples[-1], min(a2["analysis"]["samples_to_opd"], 1e3 * samples[-1])), 50)
    axis.plot(grid * per_sample, fit["a"] + fit["b_per_ln_sample"] * np.log(grid), ":", label="log-linear fit")
    n0_flops = flops[0]
    points = [p for p in a2["opd"]["curve"] if p["step"] > 0]
    axis.plot(
        [n0_flops + p["flops"] for p in points],
        [p["accuracy"] for p in points],
        "s-",
        label="OPD from n0 (FLOPs added to n0's)",
    )
    axis.set(xscale="log", xlabel="FLOPs, teacher + student (log)", title="A2: accuracy vs compute")
    finish_plot(fig, axis, path)
