"""Experiment C (``mentor bench paper --only C``): on-policy distillation on ONE training prompt.

Protocol: a weak arithmetic student (the demo's SFT start, ``scale.student_sft_steps`` steps) is distilled
from the shipped arithmetic teacher on a single training prompt (``train_problems(1, seed=11)``), sampled
``one_prompt_samples`` times per step for ``one_prompt_steps`` steps (the paper: 20 steps x 256 samples).
Held-out greedy accuracy on ``eval_size`` test problems before, during and after, and the teacher's on the
same problems. Intervals (95%): Wilson for each accuracy; the change after - before by a paired percentile
bootstrap over the same problems (2,000 resamples, seed 0). Seed 0 for the start, sampling and data order.
"""

from __future__ import annotations

from pathlib import Path

from mentor.evaluation.intervals import paired_difference_interval, wilson_interval


def experiment_one_prompt(out: Path, scale, quiet: bool) -> dict:
    """Run C into ``out / "C"``; ``scale`` is ``experiments.paper.run.PaperScale``."""
    from mentor.config import DistillConfig
    from mentor.data.prompts import EncodedExample
    from mentor.evaluation.accuracy import evaluate
    from mentor.models.loading import load_model, load_tokenizer
    from mentor.recipes.demo import DEMO_OPD_LR, MAX_NEW_TOKENS, init_student, shipped_teacher_path
    from mentor.recipes.distill import run_distill
    from mentor.tasks.registry import get_task
    from mentor.train.progress import console

    console.rule("C: on-policy distillation on ONE training prompt")
    teacher = shipped_teacher_path()
    task = get_task("arithmetic")
    start = init_student(out / "C", scale.student_sft_steps, quiet)  # a weak arithmetic start
    tokenizer = load_tokenizer(str(teacher))
    prompt = task.train_problems(1, seed=11)[0]
    one = [EncodedExample(tokenizer(prompt.prompt)["input_ids"], None, prompt.prompt, prompt)]
    problems = task.test_problems(scale.eval_size)
    before = evaluate(load_model(str(start)), tokenizer, task, problems, MAX_NEW_TOKENS).correct
    config = DistillConfig(
        student=str(start),
        teacher=str(teacher),
        task="arithmetic",
        output_dir=str(out / "C" / "opd"),
        steps=scale.one_prompt_steps,
        batch_size=1,
        group_size=scale.one_prompt_samples,
        max_new_tokens=MAX_NEW_TOKENS,
        learning_rate=DEMO_OPD_LR,
        eval_size=scale.eval_size,
        eval_every=max(1, scale.one_prompt_steps // 4),
        overwrite=True,
        quiet=quiet,
    )
    trainer, history = run_distill(config, examples=one)
    after = evaluate(trainer.model, tokenizer, task, problems, MAX_NEW_TOKENS).correct
    teacher_correct = evaluate(load_model(str(teacher)), tokenizer, task, problems, MAX_NEW_TOKENS).correct
    curve = [{"step": r["step"], "accuracy": r["accuracy"]} for r in history if "accuracy" in r]
    return {
        "prompt": prompt.prompt,
        "problems": len(problems),
        "curve": curve,
        "sequences": scale.one_prompt_steps * scale.one_prompt_samples,
        "before": _accuracy(before),
        "after": _accuracy(after),
        "teacher": _accuracy(teacher_correct),
        "before_ci": wilson_interval(sum(before), len(before)),
        "after_ci": wilson_interval(sum(after), len(after)),
        "teacher_ci": wilson_interval(sum(teacher_correct), len(teacher_correct)),
        "gain": _accuracy(after) - _accuracy(before),
        "gain_ci": paired_difference_interval(after, before),
    }


def _accuracy(correct: list[bool]) -> float:
    return sum(correct) / max(len(correct), 1)


def one_prompt_table(c: dict) -> tuple[str, list[str], list[list[str]]]:
    """(title, headers, rows) with each accuracy's Wilson interval and the paired gain's bootstrap interval."""

    def cell(key: str) -> str:
        low, high = c.get(f"{key}_ci", (c[key], c[key]))
        return f"{c[key]:.1%} [{low:.1%}, {high:.1%}]"

    rows = [
        ["student before (weak start)", cell("before")],
        [f"after OPD on one prompt ({c['sequences']} sequences)", cell("after")],
        ["teacher", cell("teacher")],
    ]
    if "gain" in c:
        low, high = c["gain_ci"]
        rows.append(["gain after - before (paired bootstrap)", f"{c['gain']:+.1%} [{low:+.1%}, {high:+.1%}]"])
    n = c.get("problems")
    return (
        "Experiment C: one training prompt (95% intervals)",
        ["model", f"held-out accuracy ({n} problems)" if n else "held-out accuracy"],
        rows,
    )


def plot_one_prompt(c: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 4))
    axis.plot([p["step"] for p in c["curve"]], [p["accuracy"] for p in c["curve"]], marker="o", label="student")
    axis.axhline(c["teacher"], linestyle="--", color="gray", label="teacher")
    if "teacher_ci" in c:
        axis.axhspan(*c["teacher_ci"], color="gray", alpha=0.15)
    axis.set(
        xlabel="gradient step (one training prompt)",
        ylabel="held-out accuracy",
        ylim=(0, 1.02),
        title="C: OPD on a single prompt",
    )
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
