"""A2 prune-and-heal: SFT's log-linear fits, the FLOPs SFT needs to reach OPD, the table and the plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

METRICS = {  # name -> (label, higher is better)
    "agreement": ("agreement with the teacher (ROUGE-L F1)", True),
    "facts": ("facts the teacher answers", True),
    "ifeval_prompt_strict": ("IFEval prompt strict", True),
    "reverse_kl": ("reverse KL to the teacher (nats/token)", False),
    "forward_kl": ("forward KL from the teacher (nats/token)", False),
}
SFT_POINTS = ("sft_n0", "sft_2n0", "sft_4n0")
OPD_ARMS = ("opd_sampled", "opd_top_k", "opd_one_prompt")
PAIRS = (  # (row, against): paired differences on the same evaluation items
    ("opd_sampled", "sft_n0"),
    ("opd_sampled", "sft_4n0"),
    ("opd_top_k", "sft_4n0"),
    ("opd_top_k", "opd_sampled"),
    ("forward_kl_n0", "sft_n0"),
    ("sft_4n0", "sft_n0"),
    ("opd_one_prompt", "sft_n0"),
    ("opd_one_prompt", "opd_sampled"),
)
EXTRAPOLATION_LIMIT = 4.0  # beyond 4x the fitted range's top, a crossing is "not reached on the fit" (protocol)


def flops(cost: dict, counted: str) -> float:
    return cost["student"] + (cost["teacher"] if counted == "student+teacher" else 0.0)


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    slope, intercept = np.polyfit(np.log10(xs), ys, 1)
    return float(slope), float(intercept)


def sft_flops_to_reach(target: float, slope: float, intercept: float, higher_better: bool, top: float) -> float | None:
    """Where SFT's line meets ``target``; None when it never does going up in FLOPs, or only past the limit."""
    if slope == 0 or (slope > 0) != higher_better:
        return None
    needed = 10 ** ((target - intercept) / slope)
    return needed if needed <= EXTRAPOLATION_LIMIT * top else None


def analyse(result: dict) -> dict:
    """Per metric and way of counting: SFT's line, and for each OPD arm the multiple of FLOPs beyond SFT-n0
    that SFT would need to reach it, over OPD's own."""
    rows, costs = result["rows"], result["costs"]
    fits: dict = {}
    for metric, (_, higher_better) in METRICS.items():
        fits[metric] = {}
        for counted in ("student", "student+teacher"):
            xs = [flops(costs[p], counted) for p in SFT_POINTS]
            ys = [rows[p][metric]["value"] for p in SFT_POINTS]
            slope, intercept = fit_line(xs, ys)
            entry: dict = {"slope_per_decade": slope, "intercept": intercept, "opd": {}}
            for arm in OPD_ARMS:
                target = rows[arm][metric]["value"]
                reached = sft_flops_to_reach(target, slope, intercept, higher_better, max(xs))
                own = flops(costs[arm]["own"], counted)
                beyond_n0 = None if reached is None else max(reached - xs[0], 0.0)
                entry["opd"][arm] = {
                    "value": target,
                    "sft_flops_needed": reached,
                    "sft_flops_beyond_n0": beyond_n0,
                    "opd_flops_beyond_n0": own,
                    "multiple": None if beyond_n0 is None else beyond_n0 / own,
                    "better_than_sft_4n0": (target > ys[-1]) == higher_better and target != ys[-1],
                }
            fits[metric][counted] = entry
    return fits


def paired(result: dict) -> list[dict]:
    from mentor.evaluation.intervals import paired_difference_interval

    rows, out = result["rows"], []
    for row, against in PAIRS:
        entry = {"row": row, "against": against}
        for metric in ("agreement", "facts"):
            a, b = rows[row]["per_item"][metric], rows[against]["per_item"][metric]
            value = float(np.mean(a) - np.mean(b)) if a else 0.0
            entry[metric] = {"value": value, "ci": paired_difference_interval(a, b) if a else (0.0, 0.0)}
        out.append(entry)
    return out


def _cell(entry: dict, digits: int = 3, percent: bool = False) -> str:
    low, high = entry["ci"]
    if percent:
        return f"{100 * entry['value']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
    return f"{entry['value']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _multiple(m: float | None) -> str:
    if m is None:
        return "not reached on the fit"
    return "SFT-n0 is already there" if m == 0 else f"{m:.1f}x"


def write_report(result: dict, out: Path) -> Path:
    from experiments.prune_heal.run import LABELS

    rows, costs, fits, scale = result["rows"], result["costs"], result["fits"], result["scale"]
    minutes = sum(t["wall_minutes"] for t in result["timings"].values())
    lines = [
        f"# A2 prune and heal: results{' (--quick: not results, a check that every stage runs)' if result['quick'] else ''}",
        "",
        f"Protocol: [protocol.md](protocol.md) ({result['protocol']}). Teacher SmolLM2-135M-Instruct (30 layers); "
        f"student start: layers {', '.join(map(str, result['dropped']))} removed (24 layers). n0 = {scale['n0']} "
        f"sequences, {scale['batch']} per step, lr {scale['learning_rate']}, at most {scale['new_tokens']} new tokens. "
        f"Evaluation: {scale['eval_prompts']} held-out prompts on topics never trained on, "
        f"{result['facts_kept']} facts the teacher answers, {scale['ifeval_prompts']} IFEval prompts. One training "
        f"seed (0): the 95% intervals cover evaluation items, not training noise. Wall time {minutes:.1f} min on the "
        "shared 2-core CPU.",
        "",
        "| model | agreement (ROUGE-L) | facts % | IFEval prompt strict % | IFEval instr. loose % | reverse KL | "
        "forward KL | EOS rate | FLOPs student | FLOPs teacher |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, label in LABELS.items():
        if arm not in rows:
            continue
        r = rows[arm]
        cost = costs.get(arm)
        lines.append(
            f"| {label} | {_cell(r['agreement'])} | {_cell(r['facts'], percent=True)} | "
            f"{_cell(r['ifeval_prompt_strict'], percent=True)} | {_cell(r['ifeval_instruction_loose'], percent=True)} | "
            f"{_cell(r['reverse_kl'])} | {_cell(r['forward_kl'])} | {r['eos_rate']:.2f} | "
            f"{cost['student']:.2e} | {cost['teacher']:.2e} |"
            if cost
            else f"| {label} | {_cell(r['agreement'])} | {_cell(r['facts'], percent=True)} | "
            f"{_cell(r['ifeval_prompt_strict'], percent=True)} | {_cell(r['ifeval_instruction_loose'], percent=True)} | "
            f"{_cell(r['reverse_kl'])} | {_cell(r['forward_kl'])} | {r['eos_rate']:.2f} | - | - |"
        )
    lines += [
        "",
        "FLOPs are cumulative from the pruned start (OPD rows include the SFT-n0 they start from); SFT's teacher "
        "FLOPs are its sampling of the trained sequences, forward KL's add the teacher's forward in the update, "
        "OPD's its scoring.",
        "",
        "## Paired differences (the same evaluation items; 95% percentile bootstrap, 2,000 resamples, seed 0)",
        "",
        "| row | against | agreement (ROUGE-L) | facts (points) |",
        "|---|---|---|---|",
    ]
    for entry in result["paired"]:
        a, f = entry["agreement"], entry["facts"]
        lines.append(
            f"| {LABELS[entry['row']]} | {LABELS[entry['against']]} | {a['value']:+.3f} [{a['ci'][0]:+.3f}, "
            f"{a['ci'][1]:+.3f}] | {100 * f['value']:+.1f} [{100 * f['ci'][0]:+.1f}, {100 * f['ci'][1]:+.1f}] |"
        )
    lines += [
        "",
        "## FLOPs SFT needs, on its log-linear fit, to reach each OPD arm (beyond the shared SFT-n0 start)",
        "",
        "| metric | counted | SFT slope per decade of FLOPs | OPD sampled: multiple | OPD top-k: multiple | "
        "one prompt: multiple |",
        "|---|---|---|---|---|---|",
    ]
    for metric, (label, _) in METRICS.items():
        for counted, entry in fits[metric].items():
            lines.append(
                f"| {label} | {counted} | {entry['slope_per_decade']:+.4f} | "
                f"{_multiple(entry['opd']['opd_sampled']['multiple'])} | "
                f"{_multiple(entry['opd']['opd_top_k']['multiple'])} | "
                f"{_multiple(entry['opd']['opd_one_prompt']['multiple'])} |"
            )
    lines += [
        "",
        "Multiple: (SFT FLOPs at the crossing - SFT-n0's) / (OPD's own FLOPs). 'SFT-n0 is already there': OPD's value "
        "is no better than SFT-n0's. 'Not reached on the fit': SFT's line "
        f"moves away from OPD's value with more data, or meets it only beyond {EXTRAPOLATION_LIMIT:.0f}x SFT-4n0's "
        "FLOPs (protocol).",
        "",
        "## Stages (wall / CPU minutes)",
        "",
        ", ".join(f"{k}: {v['wall_minutes']:.1f} / {v['cpu_minutes']:.1f}" for k, v in result["timings"].items()),
        "",
        "## Greedy answers to the first held-out prompt",
        "",
        f"*{result['splits']['evaluation'][0]}*",
        "",
    ]
    for arm, label in LABELS.items():
        if arm in rows:
            text = " ".join(rows[arm]["examples"]["chat"][0].split())
            lines.append(f"- **{label}**: {text[:300]}{'...' if len(text) > 300 else ''}")
    plot = plot_curves(result, out)
    lines += ["", f"![{plot.stem}]({plot.name})", ""]
    path = out / "results.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_curves(result: dict, out: Path) -> Path:
    """One panel per claim (agreement, reverse KL): quality against FLOPs (student + teacher), SFT's fit dashed."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.prune_heal.run import LABELS

    rows, costs, fits = result["rows"], result["costs"], result["fits"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, metric in zip(axes, ("agreement", "reverse_kl")):
        label, _ = METRICS[metric]
        xs = [flops(costs[p], "student+teacher") for p in SFT_POINTS]
        ys = [rows[p][metric]["value"] for p in SFT_POINTS]
        errors = np.array(
            [
                [rows[p][metric]["value"] - rows[p][metric]["ci"][0] for p in SFT_POINTS],
                [rows[p][metric]["ci"][1] - rows[p][metric]["value"] for p in SFT_POINTS],
            ]
        )
        axis.errorbar(xs, ys, yerr=errors, fmt="o", color="tab:blue", label="SFT n0, 2n0, 4n0", capsize=3)
        fit = fits[metric]["student+teacher"]
        line_x = np.logspace(math.log10(min(xs)), math.log10(EXTRAPOLATION_LIMIT * max(xs)), 50)
        axis.plot(line_x, fit["intercept"] + fit["slope_per_decade"] * np.log10(line_x), "--", color="tab:blue")
        for arm, colour in (
            ("forward_kl_n0", "tab:green"),
            ("opd_sampled", "tab:red"),
            ("opd_top_k", "tab:purple"),
            ("opd_one_prompt", "tab:orange"),
        ):
            r = rows[arm][metric]
            axis.errorbar(
                [flops(costs[arm], "student+teacher")],
                [r["value"]],
                yerr=[[r["value"] - r["ci"][0]], [r["ci"][1] - r["value"]]],
                fmt="s",
                color=colour,
                label=LABELS[arm],
                capsize=3,
            )
        for arm, style in (("teacher", ":"), ("start", "-.")):
            axis.axhline(rows[arm][metric]["value"], linestyle=style, color="grey", label=LABELS[arm])
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap on a short range
        axis.set_xlabel("FLOPs from the pruned start (student + teacher)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle("Prune and heal, SmolLM2-135M-Instruct: 95% intervals over evaluation items, one seed")
    figure.tight_layout()
    path = out / "prune_heal.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
