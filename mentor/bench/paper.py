"""``mentor bench paper``: the three experiments of the on-policy distillation post, at CPU scale.

A. Math (the built-in arithmetic task): from one shared weak SFT student, continued SFT on teacher
   samples, RL, OPD and OPD+reward, each with the same batch (64 sequences per step) and learning rate.
   Accuracy vs gradient steps and vs FLOPs, and the paper's two ratios.
B. Continual learning: a chat model trained here on verifiable instructions -> mid-trained on synthetic
   internal documents (100% docs, and 70/30 docs/chat) -> OPD self-distillation with the chat model as
   teacher. Knowledge QA and instruction following at each stage.
C. One prompt: OPD on a single training prompt with many samples, then held-out accuracy vs the teacher.

Every stage is a normal recipe (``run_sft``, ``run_rl``, ``run_distill``); the bench only picks sizes.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.table import Table  # noqa: E402

from mentor.bench.continual import Instructions, InternalDocs  # noqa: E402
from mentor.config import DistillConfig, RLConfig, SFTConfig  # noqa: E402
from mentor.data.prompts import EncodedExample, encode_completion  # noqa: E402
from mentor.evaluation.accuracy import evaluate  # noqa: E402
from mentor.evaluation.tables import markdown_table  # noqa: E402
from mentor.models.loading import load_model, load_tokenizer  # noqa: E402
from mentor.models.tiny import build_char_tokenizer, build_tiny_model, save_tiny, tiny_config  # noqa: E402
from mentor.recipes.common import quiet_transformers  # noqa: E402
from mentor.recipes.demo import DEMO_OPD_LR, MAX_NEW_TOKENS, STUDENT_ARCH, init_student, shipped_teacher_path  # noqa: E402
from mentor.recipes.distill import run_distill  # noqa: E402
from mentor.recipes.rl import run_rl  # noqa: E402
from mentor.recipes.sft import run_sft  # noqa: E402
from mentor.tasks.registry import get_task  # noqa: E402
from mentor.train.progress import console  # noqa: E402

METHODS = ("sft", "rl", "opd", "opd+reward")


@dataclass
class PaperScale:
    student_sft_steps: int = 1000  # the shared weak start: non-zero accuracy, far below the teacher (paper: 60%)
    steps: int = 150  # gradient steps per method in Experiment A
    prompts_per_step: int = 16  # x group_size sequences; SFT takes the same number of teacher samples
    group_size: int = 4
    eval_every: int = 10
    eval_size: int = 200
    chat_sft_steps: int = 250  # B: the base chat model
    midtrain_steps: int = 150  # B: each mid-training mix
    self_distill_steps: int = 20  # B: OPD with the base chat model as teacher
    people: int = 24  # B: 2 facts each
    one_prompt_steps: int = 20  # C (the paper: 20 steps of 256 rollouts)
    one_prompt_samples: int = 64  # C: rollouts of the single prompt per step


FULL = PaperScale()
QUICK = PaperScale(student_sft_steps=60, steps=6, eval_every=3, eval_size=60, chat_sft_steps=60, midtrain_steps=40,
                   self_distill_steps=4, people=8, one_prompt_steps=3, one_prompt_samples=16)


def run_paper(out: str = "runs/paper", quick: bool = False, quiet: bool = False, only: str = "ABC",
              **overrides) -> dict:
    quiet_transformers()
    scale = replace(QUICK if quick else FULL, **{k: v for k, v in overrides.items() if v is not None})
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = out_dir / "results.json"
    # experiments run separately (--only) into one directory share one report
    result = json.loads(saved.read_text()) if saved.exists() and only != "ABC" else {}
    result["scale"] = asdict(scale)
    timings = result.get("minutes", {})
    for name, experiment in (("A", experiment_math), ("B", experiment_continual), ("C", experiment_one_prompt)):
        if name not in only:  # C starts from A's student: A must have run in --out before
            continue
        t0 = time.perf_counter()
        result[name] = experiment(out_dir, scale, quiet)
        timings[name] = (time.perf_counter() - t0) / 60
        saved.write_text(json.dumps(result | {"minutes": timings}, indent=1, default=str))
    timings.pop("total", None)
    result["minutes"] = timings | {"total": sum(timings.values())}
    saved.write_text(json.dumps(result, indent=1, default=str))
    write_report(result, out_dir)
    return result


# --- Experiment A ---------------------------------------------------------------------------------------
def experiment_math(out: Path, scale: PaperScale, quiet: bool) -> dict:
    console.rule("A: math. shared weak SFT start, then SFT / RL / OPD / OPD+reward")
    teacher = shipped_teacher_path()
    if teacher is None:
        raise FileNotFoundError("the shipped arithmetic teacher is missing: run `mentor demo --retrain-teacher`")
    task = get_task("arithmetic")
    start = init_student(out / "A", scale.student_sft_steps, quiet)
    tokenizer = load_tokenizer(str(teacher))
    teacher_accuracy = evaluate(load_model(str(teacher)), tokenizer, task, task.test_problems(scale.eval_size),
                                MAX_NEW_TOKENS).accuracy
    sequences = scale.prompts_per_step * scale.group_size
    common = dict(task="arithmetic", steps=scale.steps, learning_rate=DEMO_OPD_LR, eval_every=scale.eval_every,
                  eval_size=scale.eval_size, max_new_tokens=MAX_NEW_TOKENS, overwrite=True, quiet=quiet)
    on_policy = dict(batch_size=scale.prompts_per_step, group_size=scale.group_size, **common)
    histories = {}
    histories["sft"] = run_sft(SFTConfig(
        model=str(start), from_teacher=str(teacher), teacher_samples=scale.group_size,
        teacher_prompts=scale.steps * scale.prompts_per_step, batch_size=sequences, group_size=1,
        output_dir=str(out / "A" / "sft"), **common))[1]
    histories["rl"] = run_rl(RLConfig(model=str(start), output_dir=str(out / "A" / "rl"), **on_policy))[1]
    histories["opd"] = run_distill(DistillConfig(student=str(start), teacher=str(teacher),
                                                 output_dir=str(out / "A" / "opd"), **on_policy))[1]
    histories["opd+reward"] = run_distill(DistillConfig(student=str(start), teacher=str(teacher), reward_coef=1.0,
                                                        output_dir=str(out / "A" / "opd_reward"), **on_policy))[1]
    curves = {m: accuracy_curve(h) for m, h in histories.items()}
    plot_math(curves, teacher_accuracy, out / "math_accuracy.png")
    return {"teacher": teacher_accuracy, "curves": curves, "ratios": math_ratios(curves),
            "sequences_per_step": sequences, "tokens_per_step": {m: _mean_tokens(h) for m, h in histories.items()}}


def accuracy_curve(history: list[dict]) -> list[dict]:
    """(step, accuracy, cumulative FLOPs) at every evaluation; step 0 carries the costs paid up front."""
    steps = [r for r in history if "flops_total" in r]
    paid = steps[0].get("flops_teacher_sample", 0.0) if steps else 0.0  # SFT's teacher data, drawn before step 1
    points = []
    for r in history:
        if "accuracy" not in r:
            continue
        if "flops_total" in r:
            points.append({"step": r["step"], "accuracy": r["accuracy"], "flops": r["flops_total"],
                           "student_flops": r["flops_student"], "teacher_flops": r["flops_teacher"]})
        else:  # the evaluation before training
            points.append({"step": 0, "accuracy": r["accuracy"], "flops": paid, "student_flops": 0.0,
                           "teacher_flops": paid})
    return points


def _first_reaching(curve: list[dict], target: float) -> dict | None:
    return next((p for p in curve if p["step"] > 0 and p["accuracy"] >= target - 1e-9), None)


def math_ratios(curves: dict[str, list[dict]]) -> dict:
    """The paper's two ratios, each from the first evaluation that reaches the target accuracy."""
    rl, opd, sft = curves["rl"], curves["opd"], curves["sft"]
    rl_best = max(p["accuracy"] for p in rl)
    rl_at = _first_reaching(rl, rl_best)
    opd_at = _first_reaching(opd, rl_best)
    sft_best = max(p["accuracy"] for p in sft)
    sft_at = _first_reaching(sft, sft_best)
    opd_at_sft = _first_reaching(opd, sft_best)
    out = {"rl_best": rl_best, "rl_steps": rl_at["step"] if rl_at else None,
           "opd_steps_to_rl_best": opd_at["step"] if opd_at else None,
           "sft_best": sft_best, "sft_flops": sft_at["flops"] if sft_at else None,
           "sft_student_flops": sft_at["student_flops"] if sft_at else None,
           "opd_flops_to_sft_best": opd_at_sft["flops"] if opd_at_sft else None,
           "opd_student_flops_to_sft_best": opd_at_sft["student_flops"] if opd_at_sft else None}
    out["step_ratio"] = _ratio(out["rl_steps"], out["opd_steps_to_rl_best"])
    out["flop_ratio"] = _ratio(out["sft_flops"], out["opd_flops_to_sft_best"])
    out["student_flop_ratio"] = _ratio(out["sft_student_flops"], out["opd_student_flops_to_sft_best"])
    return out


def _ratio(a, b):
    return a / b if a and b else None


def _mean_tokens(history: list[dict]) -> float:
    steps = [r["tokens"] for r in history if "tokens" in r]
    return sum(steps) / max(len(steps), 1)


def plot_math(curves: dict[str, list[dict]], teacher: float, path: Path) -> None:
    fig, (by_step, by_flops) = plt.subplots(1, 2, figsize=(11, 4))
    for method, points in curves.items():
        by_step.plot([p["step"] for p in points], [p["accuracy"] for p in points], marker="o", label=method)
        spent = [p for p in points if p["flops"] > 0]  # a log axis has no zero: the on-policy starts are left out
        by_flops.plot([p["flops"] for p in spent], [p["accuracy"] for p in spent], marker="o", label=method)
    for axis in (by_step, by_flops):
        axis.axhline(teacher, linestyle="--", color="gray", label="teacher")
        axis.set(ylabel="held-out accuracy", ylim=(0, 1.02))
        axis.grid(alpha=0.3)
    by_step.set(xlabel="gradient step", title="A: accuracy vs steps")
    by_flops.set(xlabel="total FLOPs (teacher + student, log)", xscale="log", title="A: accuracy vs compute")
    by_step.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- Experiment B ---------------------------------------------------------------------------------------
def experiment_continual(out: Path, scale: PaperScale, quiet: bool) -> dict:
    console.rule("B: continual learning. chat model -> mid-train on documents -> OPD self-distillation")
    out = out / "B"
    tokenizer = build_char_tokenizer()
    docs, instructions = InternalDocs(scale.people), Instructions()
    chat = _encode(tokenizer, [(p.prompt, p.solution, p) for p in instructions.train_problems(20_000, seed=1)])
    documents = _encode(tokenizer, [(prompt, text, None) for prompt, text in docs.documents()])
    arch = dict(STUDENT_ARCH)  # the demo student's size: B is about forgetting, not capacity
    init = save_tiny(build_tiny_model(tiny_config(arch.pop("arch"), len(tokenizer), tokenizer=tokenizer,
                                                  max_positions=64, **arch), seed=5), tokenizer, out / "init")
    sft = dict(batch_size=64, group_size=1, learning_rate=2e-3, adam_beta2=0.99, warmup_steps=20, max_new_tokens=16,
               overwrite=True, quiet=quiet, model="")
    base = _sft_stage(out / "chat", init, chat, scale.chat_sft_steps, sft)
    mixed = _mix(documents, chat, 0.7, seed=0)
    mid_100 = _sft_stage(out / "mid_100", base, documents, scale.midtrain_steps, dict(sft, learning_rate=1e-3))
    mid_70 = _sft_stage(out / "mid_70", base, mixed, scale.midtrain_steps, dict(sft, learning_rate=1e-3))
    prompts = [EncodedExample(tokenizer(p.prompt)["input_ids"], None, p.prompt, p)
               for p in instructions.train_problems(2_000, seed=2)]
    config = DistillConfig(student=str(mid_70), teacher=str(base), prompts="(built in)", output_dir=str(out / "opd"),
                           steps=scale.self_distill_steps, batch_size=16, group_size=4, max_new_tokens=16,
                           learning_rate=2 * DEMO_OPD_LR, overwrite=True, quiet=quiet)
    trainer, _ = run_distill(config, examples=prompts)
    stages = {"chat model (base)": base, "+ midtrain, 100% docs": mid_100, "+ midtrain, 70% docs / 30% chat": mid_70,
              "+ midtrain (70%) + OPD self-distillation": trainer.run.path / "final"}
    rows = {}
    for label, path in stages.items():
        model = load_model(str(path))
        rows[label] = {
            "internal_qa": evaluate(model, tokenizer, docs, docs.test_problems(), 8).accuracy,
            "instructions": evaluate(model, tokenizer, instructions, instructions.test_problems(scale.eval_size),
                                     16).accuracy}
    return {"rows": rows, "facts": len(docs.facts)}


def _encode(tokenizer, items) -> list[EncodedExample]:
    return [EncodedExample(tokenizer(prompt)["input_ids"], encode_completion(tokenizer, completion), prompt, ref)
            for prompt, completion, ref in items]


def _mix(documents: list, chat: list, docs_share: float, seed: int) -> list:
    """Every document plus enough chat examples that documents make ``docs_share`` of the data."""
    n_chat = round(len(documents) * (1 - docs_share) / docs_share)
    return documents + random.Random(seed).sample(chat, n_chat)


def _sft_stage(out: Path, model: Path, examples: list, steps: int, options: dict) -> Path:
    config = SFTConfig(**dict(options, model=str(model), data="(built in)"), output_dir=str(out), steps=steps)
    trainer, _ = run_sft(config, examples=examples)
    return trainer.run.path / "final"


# --- Experiment C ---------------------------------------------------------------------------------------
def experiment_one_prompt(out: Path, scale: PaperScale, quiet: bool) -> dict:
    console.rule("C: on-policy distillation on ONE training prompt")
    teacher = shipped_teacher_path()
    task = get_task("arithmetic")
    start = out / "A" / "student_sft" / "final"  # the shared weak start of Experiment A
    tokenizer = load_tokenizer(str(teacher))
    prompt = task.train_problems(1, seed=11)[0]
    one = [EncodedExample(tokenizer(prompt.prompt)["input_ids"], None, prompt.prompt, prompt)]
    config = DistillConfig(student=str(start), teacher=str(teacher), task="arithmetic", output_dir=str(out / "C"),
                           steps=scale.one_prompt_steps, batch_size=1, group_size=scale.one_prompt_samples,
                           max_new_tokens=MAX_NEW_TOKENS, learning_rate=DEMO_OPD_LR, eval_size=scale.eval_size,
                           eval_every=max(1, scale.one_prompt_steps // 4), overwrite=True, quiet=quiet)
    _, history = run_distill(config, examples=one)
    problems = task.test_problems(scale.eval_size)
    teacher_accuracy = evaluate(load_model(str(teacher)), tokenizer, task, problems, MAX_NEW_TOKENS).accuracy
    curve = [{"step": r["step"], "accuracy": r["accuracy"]} for r in history if "accuracy" in r]
    return {"prompt": prompt.prompt, "teacher": teacher_accuracy, "before": curve[0]["accuracy"],
            "after": curve[-1]["accuracy"], "curve": curve,
            "sequences": scale.one_prompt_steps * scale.one_prompt_samples}


# --- report ---------------------------------------------------------------------------------------------
def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _sci(x) -> str:
    return "n/a" if x is None else f"{x:.2e}"


def _times(x) -> str:
    return "not reached" if x is None else f"{x:.1f}x"


def report_tables(result: dict) -> dict[str, list[list[str]]]:
    tables: dict[str, list[list[str]]] = {}
    if "A" in result:
        tables.update(_math_tables(result["A"]))
    if "B" in result:
        tables["continual"] = [[label, _pct(v["internal_qa"]), _pct(v["instructions"])]
                               for label, v in result["B"]["rows"].items()]
    if "C" in result:
        c = result["C"]
        tables["one_prompt"] = [["student before (shared weak start)", _pct(c["before"])],
                                [f"after OPD on one prompt ({c['sequences']} sequences)", _pct(c["after"])],
                                ["teacher", _pct(c["teacher"])]]
    return tables


def _math_tables(a: dict) -> dict[str, list[list[str]]]:
    math_rows = []
    for method, points in a["curves"].items():
        best = max(points, key=lambda p: (p["accuracy"], -p["step"]))
        last = points[-1]
        math_rows.append([method, _pct(points[0]["accuracy"]), _pct(last["accuracy"]),
                          f"{_pct(best['accuracy'])} @ {best['step']}", _sci(last["teacher_flops"]),
                          _sci(last["student_flops"])])
    math_rows.append(["teacher", _pct(a["teacher"]), "", "", "", ""])
    r = a["ratios"]
    ratio_rows = [
        ["RL steps to its best / OPD steps to the same accuracy (paper: 7-10x)",
         f"{r['rl_steps']} / {r['opd_steps_to_rl_best']}", _times(r["step_ratio"])],
        ["SFT FLOPs to its best / OPD FLOPs to the same accuracy, teacher + student (paper: ~30x)",
         f"{_sci(r['sft_flops'])} / {_sci(r['opd_flops_to_sft_best'])}", _times(r["flop_ratio"])],
        ["the same, student FLOPs only (paper: ~9x)",
         f"{_sci(r['sft_student_flops'])} / {_sci(r['opd_student_flops_to_sft_best'])}", _times(r["student_flop_ratio"])],
    ]
    return {"math": math_rows, "ratios": ratio_rows}


HEADERS = {"math": ["method", "start", "final", "best @ step", "teacher FLOPs", "student FLOPs"],
           "ratios": ["ratio", "values", "measured"],
           "continual": ["model", "internal QA", "instruction following"],
           "one_prompt": ["model", "held-out accuracy"]}


def plot_continual(rows: dict[str, dict], path: Path) -> None:
    fig, axis = plt.subplots(figsize=(8, 4))
    labels = list(rows)
    width = 0.38
    for offset, (key, name) in zip((-width / 2, width / 2), (("internal_qa", "internal QA"),
                                                             ("instructions", "instruction following"))):
        axis.bar([i + offset for i in range(len(labels))], [rows[label][key] for label in labels], width, label=name)
    axis.set_xticks(range(len(labels)), [label.replace(", ", ",\n").replace(" + OPD", "\n+ OPD") for label in labels],
                    fontsize=8)
    axis.set(ylabel="accuracy", ylim=(0, 1.05), title="B: knowledge vs behaviour through continual learning")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_one_prompt(c: dict, path: Path) -> None:
    fig, axis = plt.subplots(figsize=(6, 4))
    axis.plot([p["step"] for p in c["curve"]], [p["accuracy"] for p in c["curve"]], marker="o", label="student")
    axis.axhline(c["teacher"], linestyle="--", color="gray", label="teacher")
    axis.set(xlabel="gradient step (one training prompt)", ylabel="held-out accuracy", ylim=(0, 1.02),
             title="C: OPD on a single prompt")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# what a reader needs to judge each table (filled in by hand after a run: see benchmarks/paper/results.md)
NOTES: dict[str, list[str]] = {}

PLOTS = {"math": "math_accuracy.png", "continual": "continual.png", "one_prompt": "one_prompt.png"}


def write_report(result: dict, out: Path) -> Path:
    tables = report_tables(result)
    if "B" in result:
        plot_continual(result["B"]["rows"], out / PLOTS["continual"])
    if "A" in result:
        plot_math(result["A"]["curves"], result["A"]["teacher"], out / PLOTS["math"])
    if "C" in result:
        plot_one_prompt(result["C"], out / PLOTS["one_prompt"])
    titles = {"math": "Experiment A: math (arithmetic), accuracy and compute",
              "ratios": "Experiment A: the paper's two ratios", "continual": "Experiment B: continual learning",
              "one_prompt": "Experiment C: one training prompt"}
    for key, rows in tables.items():
        table = Table(title=titles[key])
        for column in HEADERS[key]:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    s, m = result["scale"], result["minutes"]
    parts = [f"# mentor bench paper{' (--quick)' if s['steps'] < FULL.steps else ''}", "",
             f"Wall time {m['total']:.1f} min on this machine ("
             + ", ".join(f"{k} {v:.1f}" for k, v in m.items() if k != "total") + "). "
             f"Scale: {json.dumps(s)}.", ""]
    for key, rows in tables.items():
        parts += [f"## {titles[key]}", "", markdown_table(HEADERS[key], rows), ""]
        if key in PLOTS:
            parts += [f"![{titles[key]}]({PLOTS[key]})", ""]
        parts += NOTES.get(key, [])
    path = out / "results.md"
    path.write_text("\n".join(parts))
    console.print(f"results: {path}")
    return path
