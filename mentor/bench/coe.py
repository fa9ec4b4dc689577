"""``mentor bench coe``: the paper's Table 1 and ablations at toy scale on the built-in categories.

One tiny Qwen3 base (a short mixed SFT from random init, so attention is not random when stage 1 freezes
it), then, from that base: mixed SFT, the three FFN experts, CoE-3E2A and its one-flag ablations. Every
model is graded greedily on the same held-out problems of each category and on the collaboration task.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mentor.coe.inspect import resource_row
from mentor.config import SFTConfig
from mentor.evaluation.accuracy import evaluate
from mentor.evaluation.tables import markdown_table
from mentor.models.loading import load_model, load_tokenizer
from mentor.models.tiny import build_char_tokenizer, build_tiny_model, save_tiny, tiny_config
from mentor.coe.recipe import (CoEConfig, assemble_step, inspect_step, label_step, load_category_examples,
                                train_expert, train_router_step)
from mentor.recipes.common import quiet_transformers
from mentor.recipes.sft import run_sft
from mentor.tasks.registry import get_task
from mentor.tasks.coe_tasks import CATEGORY_TASKS, COLLABORATION_TASK
from mentor.errors import MentorError
from mentor.train.progress import console
from mentor.train.run_dir import RunDirectory


@dataclass
class BenchScale:
    hidden: int
    layers: int
    base_steps: int  # mixed SFT from random init: the "pre-trained" base
    expert_steps: int
    stage2_steps: int
    batch_size: int
    eval_size: int
    train_size: int  # per category


FULL = BenchScale(hidden=64, layers=4, base_steps=400, expert_steps=150, stage2_steps=100, batch_size=32,
                  eval_size=100, train_size=3000)
QUICK = BenchScale(hidden=32, layers=2, base_steps=4, expert_steps=3, stage2_steps=3, batch_size=8,
                   eval_size=6, train_size=60)
MAX_NEW_TOKENS = 26
LR = 2e-3

# name -> stage-2 overrides (the ablations of the paper, one flag each)
VARIANTS = {
    "CoE-3E2A": {},
    "CoE-3E2A, no routing loss": {"router_loss": "none"},
    "CoE-3E2A, stage 2 trains all (full)": {"train": "full"},
    "CoE-3E2A, stage 2 trains routers only": {"train": "router"},
    "MoE-3E2A from base-FFN copies": {"expert_init": "copies", "num_experts": 3},
    "MoE-2E2A from base-FFN copies": {"expert_init": "copies", "num_experts": 2},
}
QUICK_VARIANTS = ("CoE-3E2A", "MoE-2E2A from base-FFN copies")


def run_bench(out: str = "benchmarks/coe", quick: bool = False) -> dict:
    quiet_transformers()
    # toy-sized matrices: thread start-up costs more than the math (25x slower with 2 threads on a busy CPU)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_bench(Path(out), quick)
    finally:
        torch.set_num_threads(threads)


def _run_bench(root: Path, quick: bool) -> dict:
    scale = QUICK if quick else FULL
    work = root / "runs"
    # a benchmark starts from scratch (no run directory is resumed), but clears only a runs/ it made itself
    if work.exists() and "coe_shared" not in RunDirectory(work).owned() and any(work.iterdir()):
        raise MentorError(f"{work} exists and was not made by mentor bench coe, which clears its runs/ folder: "
                          "choose another --out (or remove that folder yourself)")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    RunDirectory(work).own("base_init", "base", "coe_shared", "mixed_sft", *map(_slug, VARIANTS))
    started = time.perf_counter()
    tokenizer = build_char_tokenizer()
    base = _make_base(work, tokenizer, scale)
    common = dict(base=str(base), builtin=True, train_size=scale.train_size, batch_size=scale.batch_size,
                  learning_rate=LR, adam_beta2=0.99, expert_steps=scale.expert_steps, steps=scale.stage2_steps,
                  overwrite=True, quiet=True, lr_schedule="cosine", warmup_steps=min(10, scale.stage2_steps))
    shared = CoEConfig(output_dir=str(work / "coe_shared"), **common)
    console.rule("1/4 label + mixed SFT baseline")
    label_step(shared)
    mixed = _mixed_sft(shared, work / "mixed_sft", 3 * scale.expert_steps)
    console.rule("2/4 FFN experts")
    experts = {c: train_expert(shared, c) for c in shared.category_list}
    console.rule("3/4 MoE assembly + stage 2 variants")
    models = {"base": (base, None), "mixed SFT": (mixed, None)}
    models.update({f"expert {c}": (p, None) for c, p in experts.items()})
    for name, overrides in VARIANTS.items():
        if quick and name not in QUICK_VARIANTS:
            continue
        config = CoEConfig(output_dir=str(work / _slug(name)), **{**common, **overrides})
        _share_step1(shared, config)
        assemble_step(config)
        models[name] = (train_router_step(config), config)
    console.rule("4/4 evaluation")
    rows = [_evaluate_row(name, path, config, scale, shared) for name, (path, config) in models.items()]
    inspect = inspect_step(str(models["CoE-3E2A"][0]), root, {c: [p.prompt for p in get_task(t).test_problems(
        scale.eval_size)] for c, t in CATEGORY_TASKS.items()}, shared.category_list, MAX_NEW_TOKENS)
    result = {"rows": rows, "usage": inspect["usage"], "experts": inspect["experts"], "scale": scale.__dict__,
              "minutes": (time.perf_counter() - started) / 60,
              "cpus": os.cpu_count()}
    (root / "results.json").write_text(json.dumps(result, indent=1))
    (root / "results.md").write_text(_markdown(result, quick))
    console.print((root / "results.md").read_text())
    return result


def _make_base(work: Path, tokenizer, scale: BenchScale) -> Path:
    """A tiny Qwen3 given a short mixed SFT from random init (the stand-in for a pre-trained base)."""
    config = tiny_config("qwen3", len(tokenizer), scale.hidden, scale.layers, 4, tokenizer=tokenizer, max_positions=80)
    init = save_tiny(build_tiny_model(config, seed=0), tokenizer, work / "base_init")
    label_step(CoEConfig(base=str(init), builtin=True, train_size=scale.train_size, output_dir=str(work / "base")))
    return _mixed_sft(CoEConfig(base=str(init), builtin=True, output_dir=str(work / "base")),
                      work / "base", scale.base_steps, scale)


def _mixed_sft(config: CoEConfig, out: Path, steps: int, scale: BenchScale | None = None) -> Path:
    """Full fine-tuning on the union of the categories (the paper's SFT baseline)."""
    tokenizer = load_tokenizer(config.base)
    examples = load_category_examples(tokenizer, Path(config.output_dir) / "labels", config.category_list)
    sft = SFTConfig(model=config.base, data="(coe labels)", output_dir=str(out / "sft"), steps=steps,
                    batch_size=scale.batch_size if scale else config.batch_size, group_size=1,
                    learning_rate=LR, adam_beta2=0.99, lr_schedule="cosine", warmup_steps=min(10, steps),
                    overwrite=True, quiet=True)
    trainer, _ = run_sft(sft, tokenizer=tokenizer, examples=examples)
    return trainer.run.path / "final"


def _share_step1(shared: CoEConfig, config: CoEConfig) -> None:
    """Variants reuse the labelled data and the experts instead of retraining them."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for part in ("labels", "experts"):
        link = out / part
        if not link.exists():
            link.symlink_to((Path(shared.output_dir) / part).resolve(), target_is_directory=True)


def _evaluate_row(name: str, path: Path, config: CoEConfig | None, scale: BenchScale, shared: CoEConfig) -> dict:
    tokenizer, model = load_tokenizer(str(path)), load_model(str(path))
    if config is not None:  # the trainable set of stage 2, for the resource columns
        from mentor.coe.freezing import freeze_for_stage2

        freeze_for_stage2(model, config.train)
    elif name.startswith("expert"):
        from mentor.coe.freezing import freeze_for_expert_training

        freeze_for_expert_training(model)
    row = {"model": name, **{k: v for k, v in resource_row(name, model).items() if k != "stage"}}
    for category, task_name in {**CATEGORY_TASKS, "collaboration": COLLABORATION_TASK}.items():
        task = get_task(task_name)
        row[category] = evaluate(model, tokenizer, task, task.test_problems(scale.eval_size), MAX_NEW_TOKENS).accuracy
    row["average"] = sum(row[c] for c in CATEGORY_TASKS) / len(CATEGORY_TASKS)
    console.print(f"{name}: " + ", ".join(f"{c} {row[c]:.1%}" for c in (*CATEGORY_TASKS, "collaboration")))
    return row


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def _markdown(result: dict, quick: bool) -> str:
    s = result["scale"]
    lines = [f"# CoE at toy scale{' (--quick: smoke test, numbers meaningless)' if quick else ''}", "",
             f"Base: Qwen3, hidden {s['hidden']}, {s['layers']} layers, char tokenizer, {s['base_steps']} mixed-SFT "
             f"steps from random init. Experts: {s['expert_steps']} FFN-only SFT steps each. Mixed SFT: "
             f"{3 * s['expert_steps']} full-parameter steps on the union (each category seen as often as by its "
             f"expert). Stage 2: {s['stage2_steps']} steps. Batch {s['batch_size']}, {s['train_size']} training "
             f"problems per category, {s['eval_size']} held-out problems per column, greedy. "
             f"Wall time {result['minutes']:.1f} min on {result['cpus']} CPU cores.", "",
             markdown_table(["model", "general", "math", "coding", "average", "collaboration (PoT)", "params",
                             "trainable", "train-state MiB"],
                            [[r["model"], f"{r['general']:.1%}", f"{r['math']:.1%}", f"{r['coding']:.1%}",
                              f"{r['average']:.1%}", f"{r['collaboration']:.1%}", f"{r['params']:,}",
                              f"{r['trainable']:,}", f"{r['train_state_mib']:.2f}"] for r in result["rows"]]),
             "", "Expert usage of CoE-3E2A (share of token x layer routings that include each expert):", "",
             markdown_table(["category", *result["experts"]],
                            [[category, *(f"{x:.0%}" for x in shares)] for category, shares in result["usage"].items()])]
    lines += ["", "![routing](routing.png)  (per layer, the expert pair each output token used; also routing.html)", ""]
    return "\n".join(lines)
