"""``mentor bench coe``'s protocol text, statistics (bootstrap intervals, gates) and results.md / plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mentor.evaluation.tables import markdown_table
from mentor.tasks.coe_tasks import CHAIN_SHARE, HELDOUT_SHARE

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def protocol(scale, base: Path, variants: dict, quick: bool) -> str:
    """The protocol, fixed before the run (results.md starts with it, and holds only it while the run goes)."""
    title = "# CoE on the paper's setting" + (" (--quick: smoke scale, numbers meaningless)" if quick else "")
    s, union = scale, scale.union_steps
    return "\n".join(
        [
            title,
            "",
            "## Protocol (written before the run)",
            "",
            f"- **Base**: `{_shown(base)}` (a tiny Qwen3 pretrained from random init by `python -m experiments.coe.base` on a "
            "domain-neutral corpus generated in code: other entities' facts, four known operators on digits, four "
            "known functions on 0..99 and their compositions `fn(a op b)=a op b=x;fn(x)=y;y`; see its "
            "`pretraining.json`). One base for all seeds.",
            "- **Domains** (new knowledge the base never saw; each a table, "
            f"{HELDOUT_SHARE:.0%} of it held out of all training for the routing probe): *facts* (`color of bilo?` -> "
            "`red`, 100 new entities x 3 attributes), *operators* (`3 zap 4=` -> `19`, 3 new operators on digit pairs), "
            "*functions* (`gup(19)=` -> `36`, 3 new functions on 0..99, plus "
            f"{CHAIN_SHARE:.0%} as many chains of a new function over a *known* operator). *Collaboration*: a new "
            "function of a new operator's result (`gup(3 zap 4)=` -> `3 zap 4=19;gup(19)=36;36`): never trained in "
            "this form; it needs the operators' and the functions' knowledge at once.",
            "- **Labels**: each record carries its domain (a correct labeller; the paper used GPT-4).",
            f"- **Experts**: FFN-only SFT of the base per domain, {s.expert_steps} steps each. **Mixed SFT**: all "
            f"parameters, {union} steps on the union (each domain seen as often as by its expert). **Stage 2** of "
            f"every CoE/MoE variant: {union} steps on the union (the same budget as mixed SFT), margin routing loss "
            "(coef 1) unless said otherwise, top-2.",
            f"- **Optimiser** for every training: AdamW (0.9, 0.99), lr {s.learning_rate:g}, {s.warmup_steps} warmup "
            f"steps then cosine to 0, batch {s.batch_size}, no grid search (fixed before the run).",
            "- **Variants** (the paper's ablations): "
            + "; ".join(
                f"{n}" + (f" ({', '.join(f'{k}={v}' for k, v in o.items())})" if o else "") for n, o in variants.items()
            )
            + ".",
            f"- **Evaluation**: greedy, {s.eval_size} problems per column (the same problems for every model; the domain "
            "columns test recall of trained items, as MMLU tests pre-training recall; collaboration problems use only "
            f"trained operator pairs and function arguments). Seeds {', '.join(map(str, s.seeds))} (data order, router "
            "init); the base is evaluated once. *Average* = mean of the three domain columns.",
            "- **Intervals**: 95% percentile bootstrap over problems (per-problem correctness averaged over seeds; "
            f"{BOOTSTRAP_RESAMPLES} resamples, stratified by column for the average, paired for differences). They "
            "cover problem sampling, not seed-to-seed variation: per-seed values are listed beside them.",
            "- **Gates** (printed): (1) each expert beats the base in its domain; (2) capability conflict: mixed SFT is "
            "below each domain's expert in that domain. A gate passes when the 95% interval of the paired difference "
            "lies above 0.",
            "- **Routing probe**: on the held-out items of each domain (never trained), teacher-forced through the "
            "reference answer: the share of (completion token, layer) routings whose top-k contains the labelled expert, "
            "averaged per item, with a 95% bootstrap interval over the held-out items.",
            "",
        ]
    )


def _shown(path: Path) -> str:
    """A path relative to the working directory when it lies below it (results.md is read from the repository)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def bootstrap_interval(strata: list[np.ndarray]) -> tuple[float, float]:
    """95% percentile interval of the mean of the strata's means, resampling each stratum's items."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    stats = np.zeros(BOOTSTRAP_RESAMPLES)
    for values in strata:
        picks = rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))
        stats += values[picks].mean(axis=1)
    stats /= len(strata)
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def per_problem(row: dict, column: str) -> np.ndarray:
    """Correctness of each test problem of ``column``, averaged over the row's seeds."""
    return np.mean([np.asarray(s["correct"][column], dtype=float) for s in row["seeds"].values()], axis=0)


def _estimate(strata: list[np.ndarray]) -> dict:
    lo, hi = bootstrap_interval(strata)
    return {"value": float(np.mean([s.mean() for s in strata])), "low": lo, "high": hi}


def summarise(rows: list[dict], columns: list[str], domains: list[str]) -> dict:
    """Accuracies with intervals per row and column, the gates, the comparisons and the routing probe."""
    by_name = {r["model"]: r for r in rows}
    accuracy = {}
    for r in rows:
        cells = {c: _estimate([per_problem(r, c)]) for c in columns}
        cells["average"] = _estimate([per_problem(r, d) for d in domains])
        for c in [*columns, "average"]:
            cells[c]["per_seed"] = [
                float(np.mean([np.mean(s["correct"][d]) for d in (domains if c == "average" else [c])]))
                for s in r["seeds"].values()
            ]
        accuracy[r["model"]] = cells

    def difference(a: str, b: str, cols: list[str]) -> dict:
        return _estimate([per_problem(by_name[a], c) - per_problem(by_name[b], c) for c in cols])

    gates = []
    for d in domains:
        gates.append({"gate": f"expert {d} beats the base on {d}", **difference(f"expert {d}", "base", [d])})
        gates.append(
            {
                "gate": f"mixed SFT below expert {d} on {d} (capability conflict)",
                **difference(f"expert {d}", "mixed SFT", [d]),
            }
        )
    for g in gates:
        g["passed"] = g["low"] > 0
    comparisons = [
        {"comparison": f"{a} - {b}, {label}", **difference(a, b, cols)}
        for a, b, label, cols in (
            ("CoE-3E2A", "mixed SFT", "average", domains),
            ("CoE-3E2A", "mixed SFT", "collaboration", ["collaboration"]),
            ("CoE-3E2A", "MoE-3E2A from base-FFN copies", "average", domains),
            ("CoE-3E2A", "CoE-3E2A, no routing loss", "average", domains),
            ("CoE-3E2A", "CoE-3E2A, stage 2 trains all (full)", "average", domains),
            ("CoE-3E2A", "CoE-3E2A, stage 2 trains routers only", "average", domains),
            ("CoE-3E2A", "MoE-2E2A from base-FFN copies", "average", domains),
        )
        if a in by_name and b in by_name
    ]
    return {"accuracy": accuracy, "gates": gates, "comparisons": comparisons, "routing": _routing(rows)}


def _routing(rows: list[dict]) -> dict:
    """Per MoE row and domain: the labelled-expert-in-top-k rate (items averaged over seeds), per seed and layer."""
    out = {}
    for r in rows:
        probes = [s["labelled_in_top_k"] for s in r["seeds"].values() if "labelled_in_top_k" in s]
        if probes:
            out[r["model"]] = {
                task: {
                    **_estimate([np.mean([p[task]["per_item"] for p in probes], axis=0)]),
                    "per_seed": [float(np.mean(p[task]["per_item"])) for p in probes],
                    "per_layer": np.mean([p[task]["per_layer"] for p in probes], axis=0).tolist(),
                }
                for task in probes[0]
            }
    return out


def _cell(e: dict, seeds: bool = False) -> str:
    text = f"{e['value']:.1%} [{e['low']:.1%}, {e['high']:.1%}]"
    return text + (" (" + ", ".join(f"{v:.1%}" for v in e["per_seed"]) + ")" if seeds else "")


def _signed(e: dict) -> str:
    return f"{e['value'] * 100:+.1f} [{e['low'] * 100:+.1f}, {e['high'] * 100:+.1f}] points"


def results_markdown(result: dict) -> str:
    summary, rows = result["summary"], result["rows"]
    columns = [c for c in summary["accuracy"]["base"] if c != "average"]
    domains = [c for c in columns if c != "collaboration"]
    table = markdown_table(
        ["model", *domains, "average (per seed)", "collaboration (per seed)", "params", "trainable"],
        [
            [
                r["model"],
                *(_cell(summary["accuracy"][r["model"]][d]) for d in domains),
                _cell(summary["accuracy"][r["model"]]["average"], True),
                _cell(summary["accuracy"][r["model"]]["collaboration"], True),
                f"{r['params']:,}",
                f"{r['trainable']:,}",
            ]
            for r in rows
        ],
    )
    gates = markdown_table(
        ["gate", "difference (95% CI)", "verdict"],
        [[g["gate"], _signed(g), "PASS" if g["passed"] else "FAIL"] for g in summary["gates"]],
    )
    comparisons = markdown_table(
        ["comparison", "difference (95% CI)"], [[c["comparison"], _signed(c)] for c in summary["comparisons"]]
    )
    tasks = sorted({t for probe in summary["routing"].values() for t in probe})
    routing = markdown_table(
        ["model", *tasks], [[m, *(_cell(probe[t], True) for t in tasks)] for m, probe in summary["routing"].items()]
    )
    s = result["scale"]
    return "\n".join(
        [
            "## Results",
            "",
            f"Wall time {result['minutes']:.1f} min on {result['cpus']} CPU cores (shared). Accuracy, 95% bootstrap "
            f"interval, {s['eval_size']} problems per column, seeds {s['seeds']}:",
            "",
            table,
            "",
            "![accuracy](accuracy.png)",
            "",
            "### Gates",
            "",
            gates,
            "",
            "### Comparisons with the paper's claims",
            "",
            comparisons,
            "",
            "### Labelled expert in the top-k on held-out tokens (pooled over seeds; per seed in brackets)",
            "",
            "MoE-2E2A has 2 experts and top-2: its rate is 100% by construction.",
            "",
            routing,
            "",
            "![routing](routing.png)  (first seed's CoE-3E2A: per layer, the expert pair each output token used; "
            "also routing.html and usage.json)",
            "",
        ]
    )


def plot_columns(result: dict, path: Path) -> Path:
    """One panel per column: each model's accuracy with its 95% interval."""
    from mentor.evaluation.plots import plt

    accuracy = result["summary"]["accuracy"]
    models = [r["model"] for r in result["rows"]]
    columns = list(accuracy[models[0]])
    figure, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 0.35 * len(models) + 1.5), sharey=True)
    for ax, column in zip(axes, columns):
        cells = [accuracy[m][column] for m in models]
        values = [c["value"] for c in cells]
        errors = [[v - c["low"] for v, c in zip(values, cells)], [c["high"] - v for v, c in zip(values, cells)]]
        ax.barh(range(len(models)), values, xerr=errors, color="tab:blue", alpha=0.7, capsize=2)
        ax.set_title(column)
        ax.set_xlim(0, 1)
    axes[0].set_yticks(range(len(models)), models, fontsize=8)
    axes[0].invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
