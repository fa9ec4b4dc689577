"""A1's report: ``results.md``, ``results.json`` and ``rl_vs_opd.png`` from the run's ``state.json``."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.rl_vs_opd.run import first_step_reaching


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _test_cell(row: dict) -> str:
    low, high = row["ci"]
    return f"{_pct(row['accuracy'])} [{100 * low:.0f}, {100 * high:.0f}] ({row['correct']}/{row['n']})"


def _minutes(state: dict) -> float:
    return sum(t["wall_s"] for t in state["timings"].values()) / 60


def seed_rows(state: dict) -> list[dict]:
    """One row per seed at the chosen rates: RL's plateau and steps, OPD's steps to it, test accuracies."""
    chosen, runs, tests = state["chosen"], state["runs"], state["test"]
    rows = []
    for seed in state["scale"]["seeds"]:
        rl_key, opd_key = f"rl_lr{chosen['rl']:g}_seed{seed}", f"opd_lr{chosen['opd']:g}_seed{seed}"
        if rl_key not in runs or opd_key not in runs:
            continue
        rl, opd = runs[rl_key], runs[opd_key]
        rl_steps = first_step_reaching(rl["curve"], rl["plateau_accuracy"])
        rl_test, s0_test = tests.get(rl_key), tests["s0"]
        rows.append(
            {
                "seed": seed,
                "rl": rl_key,
                "opd": opd_key,
                "plateau_accuracy": rl["plateau_accuracy"],
                "rl_plateau_step": rl["plateau_step"],
                "rl_steps_to_target": rl_steps,
                "opd_steps_to_target": opd["steps_to_target"],
                "ratio": (rl_steps / opd["steps_to_target"]) if opd["steps_to_target"] else None,
                "rl_test": rl_test,
                # the protocol's precondition: T_RL's test interval lies above S0's test accuracy
                "rl_above_s0": rl_test["ci"][0] > s0_test["accuracy"] if rl_test else None,
                "opd_test": tests.get(opd_key),
                "rl_flops": rl["flops"],
                "opd_flops": opd["flops"],
            }
        )
    return rows


def markdown(state: dict) -> str:
    scale, runs = state["scale"], state["runs"]
    lines = [
        f"# A1: RL vs OPD in steps: results (protocol: `protocol.md` v{state['protocol_version']}, fixed before this "
        "run)" + (" - QUICK SIZES, a pipeline check, not a result" if state["quick"] else ""),
        "",
        f"SmolLM2-135M-Instruct (S0), mul1, chat template, {scale['prompts']} prompts x {scale['group']} samples a "
        f"step, at most {scale['new_tokens']} new tokens, sampler `{state['sampler']}`. Validation: "
        f"{scale['val']} problems, greedy, every {scale['eval_every']} steps; test: {scale['test']} problems, "
        f"greedy, Wilson 95% intervals. {_minutes(state):.1f} min wall on the shared 2-core CPU.",
        "",
        f"S0 on test: {_test_cell(state['test']['s0'])}.",
        "",
        "## Learning-rate grids (seed 0, validation)",
        "",
        "| run | validation curve (step: accuracy) | plateau / steps to target |",
        "|---|---|---|",
    ]
    for key, run in runs.items():
        curve = ", ".join(f"{s}: {_pct(a)}" for s, a in run["curve"])
        if key.startswith("rl"):
            end = f"plateau at step {run['plateau_step']}: {_pct(run['plateau_accuracy'])}"
        else:
            reached = run["steps_to_target"]
            end = f"target {_pct(run['target'])} ({run['teacher']}): " + (
                f"step {reached}" if reached is not None else "not reached"
            )
        lines.append(f"| {key} | {curve} | {end} |")
    if "chosen" in state:
        lines += ["", f"Chosen: RL at {state['chosen']['rl']:g}, OPD at {state['chosen']['opd']:g}.", ""]
    lines += [
        "## Steps to T_RL's plateau, per seed",
        "",
        "| seed | T_RL plateau (validation) | RL steps to it | OPD steps to it | RL/OPD | RL test | OPD test | "
        "FLOPs RL / OPD (incl. teacher) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in seed_rows(state):
        ratio = f"{row['ratio']:.1f}x" if row["ratio"] else "-"
        opd_steps = row["opd_steps_to_target"] if row["opd_steps_to_target"] is not None else "not reached"
        tests = [_test_cell(row[k]) if row[k] else "-" for k in ("rl_test", "opd_test")]
        lines.append(
            f"| {row['seed']} | {_pct(row['plateau_accuracy'])} (step {row['rl_plateau_step']}) | "
            f"{row['rl_steps_to_target']} | {opd_steps} | {ratio} | {tests[0]} | {tests[1]} | "
            f"{row['rl_flops']:.2g} / {row['opd_flops']:.2g} |"
        )
    lines += [""]
    for row in seed_rows(state):
        if row["rl_above_s0"] is False:
            lines.append(
                f"**Seed {row['seed']}: RL did not rise above S0** (T_RL's test interval includes S0's "
                f"{_pct(state['test']['s0']['accuracy'])}), so there is no better teacher to distil and the steps "
                "above do not compare methods (the protocol's 'what would not')."
            )
        elif row["rl_above_s0"]:
            lines.append(f"Seed {row['seed']}: T_RL's test interval lies above S0's test accuracy.")
    lines += ["", "## Cost", "", "| stage | wall min | CPU min |", "|---|---|---|"]
    for stage, t in state["timings"].items():
        lines.append(f"| {stage} | {t['wall_s'] / 60:.1f} | {t['cpu_s'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def plot(state: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mentor.evaluation.intervals import wilson_interval

    n = state["scale"]["val"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = {"rl": "tab:blue", "opd": "tab:orange"}
    for row in seed_rows(state):
        style = "-" if row["seed"] == state["scale"]["seeds"][0] else "--"
        for method in ("rl", "opd"):
            curve = state["runs"][row[method]]["curve"]
            steps = [s for s, _ in curve]
            accs = [a for _, a in curve]
            bands = [wilson_interval(round(a * n), n) for a in accs]
            ax.plot(
                steps,
                [100 * a for a in accs],
                style,
                color=colors[method],
                marker="o",
                ms=3,
                label=f"{method.upper()} seed {row['seed']}",
            )
            ax.fill_between(
                steps, [100 * b[0] for b in bands], [100 * b[1] for b in bands], color=colors[method], alpha=0.08
            )
        ax.axhline(100 * row["plateau_accuracy"], color="gray", ls=style, lw=0.8)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"validation accuracy, % of {n} (greedy)")
    ax.set_title("A1 mul1: OPD from S0 with T_RL as teacher vs RL (gray: T_RL's plateau)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(state: dict, out: Path) -> None:
    (out / "results.json").write_text(json.dumps({**state, "rows": seed_rows(state)}, indent=1) + "\n")
    (out / "results.md").write_text(markdown(state))
    plot(state, out / "rl_vs_opd.png")
