"""The privileged-context experiment's results.md and plot (the protocol is ``protocol.md`` beside this file)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.continual.report import change_rows, with_interval  # noqa: E402
from mentor.evaluation.tables import markdown_table  # noqa: E402

METRICS = (
    ("internal_qa", "internal QA"),
    ("ifeval_prompt_strict", "IFEval prompt strict"),
    ("ifeval_instruction_loose", "IFEval instruction loose"),
)
ROW_HEADERS = ["row", *(name for _, name in METRICS), "wall min (CPU min)", "teacher tokens"]
CHANGE_HEADERS = ["change (paired, same items)", "internal QA", "IFEval prompt strict"]
COST_HEADERS = [
    "OPD run",
    "steps",
    "teacher tokens",
    "sampled tokens",
    "mean completion length",
    "share cut at max tokens",
]
PLOT = "privileged_context.png"


def tables(result: dict) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    costs = result["costs"]
    rows = [
        [label]
        + [with_interval(v[key]) if key in v else "not measured" for key, _ in METRICS]
        + [
            f"{result['row_seconds'][label]['wall'] / 60:.1f} ({result['row_seconds'][label]['cpu'] / 60:.1f})",
            f"{costs[label]['teacher_tokens']:,.0f}" if label in costs else "",
        ]
        for label, v in result["rows"].items()
    ]
    changes = change_rows(result["changes"])
    cost_rows = [
        [
            label,
            str(c["steps"]),
            f"{c['teacher_tokens']:,.0f}",
            f"{c['sampled_tokens']:,.0f}",
            f"{c['completion_length']:.1f}",
            f"{c['truncated_fraction'] * 100:.0f}%",
        ]
        for label, c in costs.items()
    ]
    return rows, changes, cost_rows


def plot(result: dict, path: Path) -> None:
    """Internal QA against IFEval prompt strict, one point per row with both intervals; T (QA only) as a band."""
    fig, axis = plt.subplots(figsize=(7.5, 6))
    rows = [r for r in result["rows"].values() if "ifeval_prompt_strict" in r]
    for i, (label, row) in enumerate(result["rows"].items()):
        qa = row["internal_qa"]
        color = f"C{i}"
        if "ifeval_prompt_strict" not in row:
            axis.axhspan(*qa["ci"], color=color, alpha=0.12)
            axis.axhline(qa["value"], color=color, linestyle="--", label=f"{label} (QA only)")
            continue
        ifeval = row["ifeval_prompt_strict"]
        axis.errorbar(
            ifeval["value"],
            qa["value"],
            xerr=[[ifeval["value"] - ifeval["ci"][0]], [ifeval["ci"][1] - ifeval["value"]]],
            yerr=[[qa["value"] - qa["ci"][0]], [qa["ci"][1] - qa["value"]]],
            fmt="o",
            capsize=3,
            color=color,
            label=label,
        )
    axis.set(
        xlabel="IFEval prompt strict (95% interval)",
        ylabel="internal QA (95% interval)",
        xlim=(0, min(1.0, max(r["ifeval_prompt_strict"]["ci"][1] for r in rows) + 0.05)),
        ylim=(0, 1.05),
        title="Privileged-context OPD vs mid-training, SmolLM2-135M-Instruct",
    )
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(result: dict, out: Path) -> Path:
    from mentor.train.progress import console

    rows, changes, cost_rows = tables(result)
    plot(result, out / PLOT)
    s = result["scale"]
    timings = result["seconds"]
    wall = sum(v["wall"] for v in timings.values()) / 60
    cpu = sum(v["cpu"] for v in timings.values()) / 60
    stages = ", ".join(f"{k} {v['wall'] / 60:.1f} ({v['cpu'] / 60:.1f})" for k, v in timings.items())
    quick = " (--quick)" if result["quick"] else ""
    parts = [
        f"# Privileged-context self-distillation vs mid-training{quick}: SmolLM2-135M-Instruct",
        "",
        f"Protocol: [protocol.md](protocol.md) (v{result['protocol_version']}, fixed before the run); code "
        f"`experiments/privileged_context/run.py` at commit {result['commit']}. Wall time {wall:.1f} min, "
        f"{cpu:.1f} CPU-minutes of process time over every stage (minutes, wall (CPU): {stages}).",
        "",
        f"Sizes: {result['facts']} employees ({2 * result['facts']} QA questions), {s['ifeval_prompts']} IFEval "
        f"prompts ({s['ifeval_tokens']} new tokens), {result['documents']} documents + {result['chat_examples']} "
        f"chat replies in the 70/30 mix, {s['midtrain_steps']} mid-training steps of {s['midtrain_batch']} at "
        f"{s['midtrain_lr']:g}; P and C: {s['self_distill_steps']} OPD steps of {s['distill_prompts']} prompts x "
        f"{s['group_size']} samples at {s['distill_lr']:g} (warmup, linear decay), {s['distill_tokens']} new "
        f"tokens, teacher self, sampled reverse KL. The teacher's prompt in P and row T: "
        f"`{result['template']!r}`.",
        "",
        "## Results (95% intervals: Wilson; instruction level: bootstrap over prompts)",
        "",
        markdown_table(ROW_HEADERS, rows),
        "",
        f"![privileged context]({PLOT})",
        "",
        "## Changes (paired bootstrap over the same questions / prompts)",
        "",
        markdown_table(CHANGE_HEADERS, changes),
        "",
        "## The OPD runs (metrics.jsonl: tokens summed over steps, the rest averaged)",
        "",
        markdown_table(COST_HEADERS, cost_rows),
        "",
        "## Reading (written after the run)",
        "",
        "Not written yet: it is written after the full run, against the protocol's hypotheses.",
        "",
    ]
    console.print("\n".join(parts[6:-4]))
    path = out / "results.md"
    path.write_text("\n".join(parts))
    console.print(f"results: {path}")
    return path
