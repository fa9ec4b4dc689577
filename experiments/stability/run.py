"""Does the demo's OPD stay stable when run for 4x its steps? And where does it break?

Runs OPD from the demo's weak student with the demo's settings for ``--multiple`` times the demo's steps,
at the default learning rate and at higher ones, and records held-out accuracy plus the signals that warn
of collapse (entropy, reverse KL, completion length, grad norm). Writes ``stability.png`` and
``stability.md`` into ``--out``.

    python experiments/stability/run.py --student runs/demo/student_sft/final --out runs/stability
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mentor.config import DistillConfig  # noqa: E402
from mentor.recipes.demo import DEMO_OPD_LR, FULL, MAX_NEW_TOKENS, shipped_teacher_path  # noqa: E402
from mentor.recipes.distill import run_distill  # noqa: E402


def run(student: str, teacher: str, out: Path, lr: float, steps: int, extra: dict) -> list[dict]:
    config = DistillConfig(
        student=student,
        teacher=teacher,
        task="arithmetic",
        output_dir=str(out),
        steps=steps,
        batch_size=FULL.batch_size,
        group_size=FULL.group_size,
        max_new_tokens=MAX_NEW_TOKENS,
        learning_rate=lr,
        eval_every=FULL.eval_every,
        eval_size=200,
        overwrite=True,
        quiet=True,
        **extra,
    )
    _, history = run_distill(config)
    return history


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--student", required=True)
    parser.add_argument("--teacher", default=None)
    parser.add_argument("--out", default="runs/stability")
    parser.add_argument("--multiple", type=int, default=4)
    parser.add_argument("--lrs", default=f"{DEMO_OPD_LR},3e-4,1e-3")
    args = parser.parse_args()
    teacher = args.teacher or str(shipped_teacher_path())
    steps = FULL.opd_steps * args.multiple
    out = Path(args.out)
    curves = {}
    for lr in [float(x) for x in args.lrs.split(",")]:
        curves[lr] = run(args.student, teacher, out / f"lr{lr:g}", lr, steps, {})
        (out / "curves.json").write_text(json.dumps({str(k): v for k, v in curves.items()}))
    keys = ("accuracy", "entropy", "reverse_kl", "completion_length", "grad_norm")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5))
    for ax, key in zip(axes, keys):
        for lr, history in curves.items():
            points = [(r["step"], r[key]) for r in history if key in r]
            ax.plot(*zip(*points), label=f"lr {lr:g}", marker="o" if key == "accuracy" else None, markersize=3)
        ax.set(title=key, xlabel="step")
        ax.axvline(FULL.opd_steps, color="grey", linestyle=":")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "stability.png", dpi=110)
    lines = [
        f"# OPD stability: {steps} steps ({args.multiple}x the demo), demo settings",
        "",
        "| lr | acc @0 | acc @demo steps | best | final | min entropy | max grad norm |",
        "|---|---|---|---|---|---|---|",
    ]
    for lr, history in curves.items():
        acc = {r["step"]: r["accuracy"] for r in history if "accuracy" in r}
        at_demo = acc.get(FULL.opd_steps, float("nan"))
        ent = min(r["entropy"] for r in history if "entropy" in r)
        gn = max(r["grad_norm"] for r in history if "grad_norm" in r)
        lines.append(
            f"| {lr:g} | {acc[0]:.1%} | {at_demo:.1%} | {max(acc.values()):.1%} | {acc[max(acc)]:.1%} "
            f"| {ent:.3f} | {gn:.2f} |"
        )
    (out / "stability.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
