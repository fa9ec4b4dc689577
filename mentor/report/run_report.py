"""A run report: ``summary.md`` and the plots a person would look at, from a run directory's files.

    summary.md                   what ran, the curves' first/last/best values, evaluations, skipped steps,
                                 where the teacher's penalty concentrates, the compute table, the figures
    report/training.png          reverse KL, accuracy, entropy, completion length, grad norm, skipped steps
    report/penalty.png, .html    the penalty view of the last logged step (runs with samples.jsonl)
    routing figure               CoE runs: ``inspect/routing.png`` of the CoE directory, linked

The trainer writes it at the end of a run; ``mentor report RUN`` writes it again at any time (also for a
run still in progress, or one stopped early).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import yaml

from mentor.errors import MentorError

logger = logging.getLogger(__name__)
REPORT_DIR = "report"

# (metric keys, first found is plotted; panel title; y label)
PANELS = [
    (("reverse_kl", "full_reverse_kl"), "reverse KL to the teacher", "nats per token"),
    (("accuracy",), "held-out accuracy", "accuracy"),
    (("reward",), "reward", "mean reward"),
    (("loss",), "loss", "loss"),
    (("entropy",), "policy entropy", "nats per token"),
    (("completion_length",), "completion length", "tokens"),
    (("grad_norm",), "gradient norm (before clipping)", "L2 norm"),
    (("skipped_steps",), "skipped steps (non-finite loss or gradient)", "cumulative count"),
]
TABLE_KEYS = (
    "reverse_kl",
    "full_reverse_kl",
    "accuracy",
    "reward",
    "loss",
    "entropy",
    "completion_length",
    "grad_norm",
    "truncated_fraction",
    "tokens_per_second",
)


def _series(history: list[dict], key: str) -> list[tuple[int, float]]:
    return [
        (r["step"], float(r[key]))
        for r in history
        if key in r and isinstance(r[key], (int, float)) and math.isfinite(float(r[key])) and "step" in r
    ]


def _same_curve(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    return len(a) == len(b) and all(
        x == y and math.isclose(u, v, rel_tol=1e-5, abs_tol=1e-7) for (x, u), (y, v) in zip(a, b)
    )


def plot_run(history: list[dict], path: str | Path, title: str) -> Path | None:
    """One PNG, a panel per metric the run logged (metrics it never logged get no panel)."""
    from matplotlib.ticker import MaxNLocator

    from mentor.evaluation.plots import plt

    panels = []
    for keys, name, unit in PANELS:
        key = next((k for k in keys if _series(history, k)), None)
        if key == "loss" and _same_curve(_series(history, "loss"), _series(history, "reverse_kl")):
            continue  # OPD's loss is its reverse KL: one panel says it
        if key is not None:
            panels.append((key, name, unit))
    if not panels:
        return None
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 2.7 * rows), squeeze=False)
    for ax, (key, name, unit) in zip(axes.flat, panels):
        points = _series(history, key)
        xs, ys = zip(*points)
        few = len(points) <= 30
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if key == "skipped_steps":
            ax.step(xs, ys, where="post", color="C3")
            ax.set_ylim(0, max(1.0, max(ys) * 1.1))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.plot(xs, ys, marker="o" if few else None, markersize=3, linewidth=1.2)
        if key == "accuracy":
            ax.set_ylim(0, 1.02)
        ax.set_title(f"{name}" + (f" ({key})" if key == "full_reverse_kl" else ""), fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _metric_table(history: list[dict]) -> str:
    from mentor.evaluation.tables import markdown_table

    rows = []
    for key in TABLE_KEYS:
        points = _series(history, key)
        if not points:
            continue
        values = [v for _, v in points]
        better = max if key in ("accuracy", "reward", "tokens_per_second") else min
        rows.append(
            [
                key,
                f"{_fmt(values[0])} (step {points[0][0]})",
                f"{_fmt(values[-1])} (step {points[-1][0]})",
                _fmt(better(values)),
                _fmt(sum(values) / len(values)),
            ]
        )
    return markdown_table(["metric", "first", "last", "best", "mean"], rows) if rows else ""


def _routing_figure(run: Path) -> Path | None:
    """The CoE routing figure of this run: its own inspect/, or the CoE directory's it is a stage of."""
    for candidate in (run / "inspect" / "routing.png", run.parent / "inspect" / "routing.png"):
        if candidate.is_file():
            return candidate
    return None


def resolve_run(path: str | Path) -> Path:
    """A run directory (one with metrics.jsonl); a CoE directory resolves to its router-training run."""
    path = Path(path)
    if not path.is_dir():
        raise MentorError(f"{path} is not a directory: pass the --output-dir of a mentor run")
    if (path / "metrics.jsonl").is_file():
        return path
    if (path / "stage2" / "metrics.jsonl").is_file():
        return path / "stage2"
    raise MentorError(
        f"{path} has no metrics.jsonl: pass the --output-dir of a mentor run (distill, sft, rl, or a CoE directory)"
    )


def write_report(run: str | Path, out: str | Path | None = None) -> dict:
    """summary.md and the figures for ``run`` (written into the run directory, or into ``out``)."""
    from mentor.report.penalty import inspect_run, penalty_summary
    from mentor.report.samples import SampleLog, own_entries
    from mentor.train.ledger import summary_table
    from mentor.train.run_dir import RunDirectory

    run = resolve_run(run)
    history = RunDirectory(run).read_metrics()
    try:
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    config = config if isinstance(config, dict) else {}
    if out is None:
        own_entries(RunDirectory(run), "summary.md", REPORT_DIR)
        out_dir, figures = run, run / REPORT_DIR
    else:
        out_dir = Path(out)
        if out_dir.exists() and not out_dir.is_dir():
            raise MentorError(f"--out {out_dir} is a file: choose a directory")
        figures = out_dir / REPORT_DIR
    figures.mkdir(parents=True, exist_ok=True)
    name = run.resolve().name
    steps = [r["step"] for r in history if isinstance(r.get("step"), int)]
    last_step = max(steps) if steps else 0
    recipe = (
        "on-policy distillation"
        if "teacher" in config
        else "RL"
        if "reference" in config
        else "SFT"
        if "model" in config
        else "training"
    )
    lines = [f"# {name}: {recipe}, {last_step} of {config.get('steps', '?')} steps", ""]
    who = [f"{k} `{config[k]}`" for k in ("student", "teacher", "model", "prompts", "task", "data") if config.get(k)]
    if who:
        lines += ["; ".join(who), ""]
    shape = [
        f"{k.replace('_', ' ')} {config[k]}"
        for k in ("batch_size", "group_size", "learning_rate", "lora_rank", "max_new_tokens")
        if k in config
    ]
    if shape:
        lines += [", ".join(shape), ""]
    files = {"summary": str(out_dir / "summary.md")}
    plot = plot_run(history, figures / "training.png", f"{name}: {recipe}")
    if plot is not None:
        files["training"] = str(plot)
        lines += [f"![training curves]({REPORT_DIR}/training.png)", ""]
    table = _metric_table([r for r in history if r.get("step", 0) > 0] or history)
    if table:
        lines += ["## Metrics", "", table, ""]
    evals = [r for r in history if "accuracy" in r]
    if evals:
        lines += [
            "Accuracy at each evaluation: "
            + ", ".join(f"step {r['step']}: {_fmt(float(r['accuracy']))}" for r in evals),
            "",
        ]
    skipped = max((int(r.get("skipped_steps", 0)) for r in history), default=0)
    lines += [
        f"Skipped updates (non-finite loss or gradient): {skipped}."
        if skipped
        else "No update was skipped (every loss and gradient was finite).",
        "",
    ]
    samples = SampleLog(run).read()
    if any(r.get("teacher_logprobs") is not None for r in samples):
        from mentor.report.penalty import summary_lines

        summary = penalty_summary(samples)
        view = inspect_run(run, out=figures)  # the last logged step
        files.update(penalty_png=view["files"]["png"], penalty_html=view["files"]["html"])
        lines += [
            "## What the teacher penalises",
            "",
            "Share of the positive penalty `log q - log p_teacher` carried by the most penalised tokens, "
            "and the tokens that most often carry it (from samples.jsonl; `mentor inspect` shows more):",
            "",
        ]
        lines += [f"- {line}" for line in summary_lines(summary)]
        lines += [
            "",
            f"![penalty view]({REPORT_DIR}/penalty.png) (hover the tokens in "
            f"[{REPORT_DIR}/penalty.html]({REPORT_DIR}/penalty.html))",
            "",
        ]
    routing = _routing_figure(run)
    if routing is not None:
        files["routing"] = str(routing)
        lines += ["## Expert routing (CoE)", "", f"![routing]({os.path.relpath(routing, out_dir)})", ""]
    last_with_flops = next((r for r in reversed(history) if any(k.startswith("flops_") for k in r)), None)
    if last_with_flops is not None:
        lines += [
            "## Compute",
            "",
            "FLOPs spent (forward 2N, backward 4N per token; see mentor/evaluation/flops.py)",
            "",
            summary_table(last_with_flops),
            "",
        ]
    text = "\n".join(lines).rstrip() + "\n"
    tmp = out_dir / ".tmp-summary.md"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out_dir / "summary.md")
    return files


def write_report_after_training(run: str | Path) -> None:
    """The trainer's end-of-run report; a figure that cannot be drawn never costs the trained model."""
    try:
        write_report(run)
    except Exception as exc:  # noqa: BLE001 - the model is saved after this returns; say why and go on
        logger.warning(
            f"mentor: warning: the run report was not written ({type(exc).__name__}: {exc}); "
            f"`mentor report {run}` tries again"
        )
