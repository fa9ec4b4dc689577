"""``mentor bench paper``: the experiments of the on-policy distillation post, at CPU scale, on its protocols.

A1. Steps (``experiments.paper.steps``): from one annealed start S0, RL to a plateau gives the teacher T_RL (same
    size); OPD from S0 with T_RL as teacher; gradient steps to T_RL's plateau accuracy, RL against OPD, on a
    long-chain task (``chains``), learning rates from a 3-point grid on a validation split, 2 seeds.
A2. Compute (``experiments.paper.compute``): SFT on a stochastic larger teacher's samples at n0, 2n0, 4n0 samples
    (a log-linear fit) against OPD from the n0 checkpoint; FLOPs to OPD's accuracy, student only and with
    the teacher.
B. Continual learning: a chat model trained here on verifiable instructions -> mid-trained on synthetic
   internal documents (100% docs, and 70/30 docs/chat) -> OPD self-distillation with the chat model as
   teacher. Knowledge QA and instruction following at each stage.
C. One prompt: OPD on a single training prompt with many samples, then held-out accuracy vs the teacher.

Every stage is a normal recipe (``run_sft``, ``run_rl``, ``run_distill``); the bench only picks sizes. Each
experiment's protocol is its module's docstring, copied into ``results.md`` before its numbers.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rich.table import Table  # noqa: E402

from experiments.paper.compute import compute_tables, experiment_compute, plot_compute  # noqa: E402
from experiments.paper.continual import continual_table, experiment_continual, plot_continual  # noqa: E402
from experiments.paper.one_prompt import experiment_one_prompt, one_prompt_table, plot_one_prompt  # noqa: E402
from experiments.paper.steps import experiment_steps, plot_steps, steps_tables  # noqa: E402
from mentor.errors import MentorError  # noqa: E402
from mentor.evaluation.tables import markdown_table  # noqa: E402
from mentor.recipes.common import quiet_transformers  # noqa: E402
from mentor.train.progress import console  # noqa: E402

EXPERIMENTS = ("A1", "A2", "B", "C")


@dataclass
class PaperScale:
    # A1 (experiments.paper.steps) and A2 (experiments.paper.compute): their docstrings give the protocol
    start_sft_steps: int = 525  # S0: annealed SFT on ground-truth chains (cosine to 0): the first length tried
    start_sft_step_increment: int = 75  # then longer ones, until one passes the gate on the validation split
    start_candidates: int = 3
    start_lr: float = 3e-3
    start_gate_stops: bool = True  # a full A1 does not go on from a start outside the gate
    warmup_steps: int = 10  # every run's warmup
    grid_steps: int = 40  # each learning rate of the grid, on the validation split
    val_size: int = 200
    rl_steps: int = 200  # RL to its plateau: T_RL
    opd_steps: int = 100
    prompts_per_step: int = 16  # x group_size sequences, RL and OPD alike
    group_size: int = 4
    eval_every: int = 10  # RL
    opd_eval_every: int = 5
    test_size: int = 500
    plateau_evals: int = 3  # T_RL's plateau accuracy: the mean of its last evaluations
    seeds: int = 2
    teacher_sft_steps: int = 800  # A2's 4x128 teacher
    samples_n0: int = 6400  # A2: SFT on n0, 2 n0, 4 n0 teacher samples
    sft_lr: float = 1e-3
    compute_opd_steps: int = 50
    compute_opd_lr: float = 3e-4
    # B and C
    student_sft_steps: int = 1000  # C's weak arithmetic start
    eval_size: int = 200
    chat_sft_steps: int = 250  # B: the base chat model
    midtrain_steps: int = 150  # B: each mid-training mix
    self_distill_steps: int = 20  # B: OPD with the base chat model as teacher
    people: int = 24  # B: 2 facts each
    one_prompt_steps: int = 20  # C (the paper: 20 steps of 256 rollouts)
    one_prompt_samples: int = 64  # C: rollouts of the single prompt per step


FULL = PaperScale()
# the same protocol at smoke-test scale: every stage runs, the numbers mean little
QUICK = PaperScale(
    start_sft_steps=60,
    start_candidates=1,
    start_gate_stops=False,
    grid_steps=4,
    val_size=40,
    rl_steps=12,
    opd_steps=6,
    eval_every=3,
    opd_eval_every=2,
    test_size=100,
    plateau_evals=2,
    teacher_sft_steps=60,
    samples_n0=128,
    compute_opd_steps=4,
    student_sft_steps=60,
    eval_size=60,
    chat_sft_steps=60,
    midtrain_steps=40,
    self_distill_steps=4,
    people=8,
    one_prompt_steps=3,
    one_prompt_samples=16,
)


def selected(only: str) -> list[str]:
    """``--only``: experiment names in any order, ``A`` standing for A1 and A2 (``A1C``, ``AB``, ``A2``)."""
    names = re.findall(r"A[12]?|B|C", only.upper())
    if not names or "".join(names) != re.sub(r"[\s,]", "", only.upper()):
        raise MentorError(f"--only {only!r}: name experiments among {', '.join(EXPERIMENTS)} (A means A1 and A2)")
    return [e for e in EXPERIMENTS if e in names or (e.startswith("A") and "A" in names)]


def run_paper(
    out: str = "runs/paper", quick: bool = False, quiet: bool = False, only: str = "ABC", **overrides
) -> dict:
    quiet_transformers()
    chosen = selected(only)
    scale = replace(QUICK if quick else FULL, **{k: v for k, v in overrides.items() if v is not None})
    check_scale(scale)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = out_dir / "results.json"  # experiments run separately (--only) into one --out share one report
    result, timings = {"scale": asdict(scale), "quick": quick}, {}
    experiments = {
        "A1": experiment_steps,
        "A2": experiment_compute,
        "B": experiment_continual,
        "C": experiment_one_prompt,
    }
    write_protocol(out_dir, scale, quick)  # the protocol is on disk before any number
    for name in chosen:
        t0 = time.perf_counter()
        result[name] = experiments[name](out_dir, scale, quiet)
        timings[name] = (time.perf_counter() - t0) / 60
        result = _merged(saved, result, chosen, timings)
    result["minutes"]["total"] = sum(result["minutes"].values())
    saved.write_text(json.dumps(result, indent=1, default=str))
    write_report(result, out_dir)
    return result


def check_scale(scale: PaperScale) -> None:
    """Sizes a run can use, said in one line with the flag's name before anything trains."""
    for name, value in asdict(scale).items():
        if isinstance(value, bool):
            continue
        least = 0 if name == "warmup_steps" else 1
        if isinstance(value, int) and value < least:
            raise MentorError(f"--{name.replace('_', '-')} must be at least {least} (got {value})")
        if isinstance(value, float) and not value > 0:
            raise MentorError(f"--{name.replace('_', '-')} must be above 0 (got {value:g})")


def _merged(saved: Path, result: dict, chosen: list[str], timings: dict) -> dict:
    """results.json as it is on disk now plus this process's experiments: two bench processes writing one
    ``--out`` (``--only A1`` and ``--only A2`` side by side) each keep the other's results."""
    on_disk = json.loads(saved.read_text()) if saved.exists() else {}
    merged = on_disk | {k: v for k, v in result.items() if k not in EXPERIMENTS or k in chosen}
    merged["minutes"] = on_disk.get("minutes", {}) | timings
    merged["minutes"].pop("total", None)
    saved.write_text(json.dumps(merged, indent=1, default=str))
    return merged


# --- protocol, written before any run -------------------------------------------------------------------
def write_protocol(out: Path, scale: PaperScale, quick: bool) -> Path:
    """``protocol.md``: every experiment's protocol and this run's sizes, before any number exists."""
    from experiments.paper import compute, continual, one_prompt, steps

    docs = {
        "A1": steps.__doc__,
        "A2": compute.__doc__,
        "B": continual.experiment_continual.__doc__,
        "C": one_prompt.__doc__,
    }
    # every experiment's protocol, whichever run now: processes that share an --out (--only A1, --only A2)
    # write the same file
    parts = [
        f"# mentor bench paper: protocol{' (--quick)' if quick else ''}",
        "",
        f"Sizes: `{json.dumps(asdict(scale))}`.",
        "",
    ]
    for name in EXPERIMENTS:
        if name in docs:
            parts += [f"## {name}", "", docs[name].strip(), ""]
    path = out / "protocol.md"
    path.write_text("\n".join(parts))
    return path


# --- report ---------------------------------------------------------------------------------------------
def report_tables(result: dict) -> dict[str, tuple[str, list[str], list[list[str]]]]:
    """key -> (title, headers, rows) for every experiment in ``result``."""
    tables: dict[str, tuple[str, list[str], list[list[str]]]] = {}
    if "A1" in result:
        tables.update(steps_tables(result["A1"]))
    if "A2" in result:
        tables.update(compute_tables(result["A2"]))
    if "B" in result:
        tables["continual"] = continual_table(result["B"])
    if "C" in result:
        tables["one_prompt"] = one_prompt_table(result["C"])
    return tables


# what a reader needs to judge each table (filled in by hand after a run: see experiments/paper/results.md)
NOTES: dict[str, list[str]] = {}

PLOTS = {"A1": "steps.png", "A2": "compute.png", "B": "continual.png", "C": "one_prompt.png"}
PLOT_AFTER = {"A1": "a1_steps", "A2": "a2_ratios", "B": "continual", "C": "one_prompt"}  # the table a plot follows


def write_report(result: dict, out: Path) -> Path:
    tables = report_tables(result)
    plotters = {
        "A1": plot_steps,
        "A2": plot_compute,
        "B": lambda b, path: plot_continual(b["rows"], path),
        "C": plot_one_prompt,
    }
    for name, plot in plotters.items():
        if name in result:
            plot(result[name], out / PLOTS[name])
    for title, headers, rows in tables.values():
        table = Table(title=title)
        for column in headers:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    m = result["minutes"]
    parts = [
        f"# mentor bench paper{' (--quick)' if result.get('quick') else ''}",
        "",
        f"Wall time {m['total']:.1f} min on this machine ("
        + ", ".join(f"{k} {v:.1f}" for k, v in m.items() if k != "total")
        + "). "
        f"Scale: `{json.dumps(result['scale'])}`. Protocols: [protocol.md](protocol.md), written before the runs.",
        "",
    ]
    for key, (title, headers, rows) in tables.items():
        parts += [f"## {title}", "", markdown_table(headers, rows), ""]
        plot = next((name for name, first in PLOT_AFTER.items() if first == key), None)
        if plot:
            parts += [f"![{plot}]({PLOTS[plot]})", ""]
        parts += NOTES.get(key, [])
    path = out / "results.md"
    path.write_text("\n".join(parts))
    console.print(f"results: {path}")
    return path
