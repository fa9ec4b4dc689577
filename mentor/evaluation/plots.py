"""PNG plots a person would rather look at than read: accuracy and reverse KL over training."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402


def plot_training(
    history: list[dict],
    path: str | Path,
    title: str,
    references: dict[str, float] | None = None,
    curves: dict[str, list[dict]] | None = None,
) -> Path:
    """Accuracy vs step (with horizontal reference lines, e.g. the teacher) and reverse KL vs step."""
    curves = curves or {"student": history}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for label, records in curves.items():
        points = [(r["step"], r["accuracy"]) for r in records if "accuracy" in r]
        if points:
            left.plot(*zip(*points), marker="o", label=label)
        kl = [(r["step"], r["reverse_kl"]) for r in records if "reverse_kl" in r]
        if kl:
            right.plot(*zip(*kl), label=label, alpha=0.8)
    for i, (label, value) in enumerate((references or {}).items()):
        left.axhline(value, linestyle="--", color=f"C{i + len(curves)}", label=label)
    left.set(xlabel="gradient step", ylabel="held-out accuracy", title=title, ylim=(0, 1.02))
    right.set(xlabel="gradient step", ylabel="per-token reverse KL (nats)", title="student vs teacher")
    left.legend(loc="lower right")
    left.grid(alpha=0.3)
    right.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
