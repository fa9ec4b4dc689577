"""``mentor bench continual``'s results.md, results table and plot (the protocol is ``continual_real``'s docstring)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mentor.evaluation.tables import markdown_table  # noqa: E402

PAPER = {
    "SmolLM2-135M-Instruct (base)": ("18%", "85%"),
    "+ midtrain, 100% docs": ("43%", "45%"),
    "+ midtrain, 70% docs / 30% chat": ("36%", "79%"),
    "+ midtrain (70%) + OPD self-distillation": ("41%", "83%"),
}
METRICS = (
    ("internal_qa", "internal QA"),
    ("ifeval_prompt_strict", "IFEval prompt strict"),
    ("ifeval_instruction_loose", "IFEval instruction loose"),
)


def with_interval(cell: dict, signed: bool = False) -> str:
    """``41.2% [33.0, 49.8]``: the value and its 95% interval, in points."""
    low, high = cell["ci"]
    sign = "+" if signed else ""
    return f"{cell['value'] * 100:{sign}.1f}% [{low * 100:{sign}.1f}, {high * 100:{sign}.1f}]"


def change_rows(changes: list[dict]) -> list[list[str]]:
    """The paired changes' table rows: which rows, and each change with its interval."""
    return [
        [
            f"{c['row']} vs {c['against']}",
            with_interval(c["internal_qa"], signed=True),
            with_interval(c["ifeval_prompt_strict"], signed=True),
        ]
        for c in changes
    ]


def real_tables(result: dict) -> tuple[list[list[str]], list[list[str]]]:
    rows = [
        [label] + [with_interval(v[key]) for key, _ in METRICS] + [" / ".join(PAPER.get(label, ("", "")))]
        for label, v in result["rows"].items()
    ]
    changes = change_rows(result["changes"])
    return rows, changes


ROW_HEADERS = [
    "model",
    "internal QA",
    "IFEval prompt strict",
    "IFEval instruction loose",
    "paper (Qwen3-8B): QA / IF-eval",
]
CHANGE_HEADERS = ["change (paired, same items)", "internal QA", "IFEval prompt strict"]


def _bars(cells: list[dict]) -> tuple[list[float], list[list[float]]]:
    """Each cell's value, and its interval as matplotlib's ``yerr`` (distances below and above)."""
    values = [c["value"] for c in cells]
    return values, [[v - c["ci"][0] for v, c in zip(values, cells)], [c["ci"][1] - v for v, c in zip(values, cells)]]


def plot_real(result: dict, path: Path) -> None:
    rows = result["rows"]
    labels = list(rows)
    fig, axis = plt.subplots(figsize=(9, 4))
    width = 0.27
    for i, (key, name) in enumerate(METRICS):
        values, errors = _bars([rows[label][key] for label in labels])
        axis.bar([j + (i - 1) * width for j in range(len(labels))], values, width, yerr=errors, capsize=3, label=name)
    axis.set_xticks(
        range(len(labels)), [label.replace(", ", ",\n").replace(" + OPD", "\n+ OPD") for label in labels], fontsize=7
    )
    axis.set(
        ylabel="accuracy (95% interval)",
        ylim=(0, 1.05),
        title="B on SmolLM2-135M-Instruct: knowledge vs instruction following",
    )
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_real_report(result: dict, out: Path) -> Path:
    from mentor.train.progress import console

    rows, changes = real_tables(result)
    plot_real(result, out / "continual_real.png")
    s = result["scale"]
    seconds = ", ".join(f"{k} {v['wall'] / 60:.1f} ({v['cpu'] / 60:.1f} CPU)" for k, v in result["seconds"].items())
    cpu = sum(v["cpu"] for v in result["seconds"].values()) / 60
    parts = [
        f"# mentor bench continual{' (--quick)' if result['quick'] else ''}: Experiment B on a real model",
        "",
        f"Wall time {result['minutes']:.1f} min on this machine, {cpu:.1f} CPU-minutes of process time "
        f"(minutes, wall (CPU): {seconds}). "
        f"Protocol: [protocol.md](protocol.md), written before the run. Sizes: {result['facts']} employees "
        f"({2 * result['facts']} QA questions), {s['ifeval_prompts']} IFEval prompts, {result['documents']} "
        f"documents + {result['chat_examples']} chat replies in the 70/30 mix, {s['midtrain_steps']} "
        f"mid-training steps of {s['midtrain_batch']}, {s['self_distill_steps']} OPD steps of "
        f"{s['distill_prompts']}x{s['group_size']} samples.",
        "",
        "## Results (95% intervals: Wilson; instruction level: bootstrap over prompts)",
        "",
        markdown_table(ROW_HEADERS, rows),
        "",
        "![continual_real](continual_real.png)",
        "",
        "## Changes between rows (paired bootstrap over the same questions / prompts)",
        "",
        markdown_table(CHANGE_HEADERS, changes),
        "",
    ]
    console.print("\n".join(parts[4:]))
    path = out / "results.md"
    path.write_text("\n".join(parts))
    console.print(f"results: {path}")
    return path


def plot_recovery(result: dict, path: Path) -> None:
    """B v4: each measure against the self-distillation steps, the base and the start as reference lines."""
    rows = result["rows"]
    steps = {label: int(label.split(", ")[1].split()[0]) for label in rows if label.startswith("+ self")}
    fig, axis = plt.subplots(figsize=(7, 4))
    for (key, name), color in zip(METRICS[:2], ("tab:green", "tab:blue")):
        xs = [0, *steps.values()]
        cells = [rows[label][key] for label in (list(rows)[1], *steps)]  # the start, then each checkpoint
        values, errors = _bars(cells)
        axis.errorbar(xs, values, yerr=errors, marker="o", capsize=3, color=color, label=f"{name} (from the start)")
        axis.axhline(rows[list(rows)[0]][key]["value"], color=color, ls=":", lw=1, label=f"{name}, base")
    axis.set(
        xlabel="OPD self-distillation steps (4 prompts x 2 samples each)",
        ylabel="accuracy (95% Wilson interval)",
        title="B v4: recovery against the self-distillation budget",
    )
    axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_recovery_report(result: dict, out: Path) -> Path:
    """B v4's results.md: the rows, the paired changes, the plot, the cost, and the check against v3."""
    rows = [[label] + [with_interval(v[key]) for key, _ in METRICS] for label, v in result["rows"].items()]
    plot_recovery(result, out / "recovery.png")
    s, same = result["scale"], result["same_as_v3"]
    cost = ", ".join(f"{k} {v['wall'] / 60:.1f} ({v['cpu'] / 60:.1f} CPU)" for k, v in result["timings"].items())
    check = (
        "v3's results are not beside this run, so the base and the start were not checked against them."
        if same is None
        else "Evaluated again here, the base and the start give exactly v3's per-item outcomes: "
        + ", ".join(f"{label}: {'yes' if ok else 'NO'}" for label, ok in same.items())
        + "."
    )
    parts = [
        f"# B v4{' (--quick)' if result['quick'] else ''}: the self-distillation budget",
        "",
        f"Protocol: [{result['protocol']}]({result['protocol']}), written before the run. From `{result['start']}`, "
        f"OPD with the base as the frozen teacher: {s['self_distill_steps']} steps of {s['distill_prompts']} prompts "
        f"x {s['group_size']} samples, learning rate {s['distill_lr']:g}, at most {s['distill_tokens']} new tokens. "
        f"{s['ifeval_prompts']} IFEval prompts, {2 * s['people']} internal questions. One training seed. "
        f"{result['minutes']:.1f} min wall (minutes, wall (CPU): {cost}).",
        "",
        check,
        "",
        "## Rows (95% intervals: Wilson; instruction level: bootstrap over prompts)",
        "",
        markdown_table(ROW_HEADERS[:4], rows),
        "",
        "![recovery](recovery.png)",
        "",
        "## Changes (paired bootstrap over the same questions / prompts)",
        "",
        markdown_table(CHANGE_HEADERS, change_rows(result["changes"])),
        "",
    ]
    path = out / "results.md"
    path.write_text("\n".join(parts))
    return path
