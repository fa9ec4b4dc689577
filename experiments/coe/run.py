"""``mentor bench coe``: CoE (AAAI 2025) on the paper's setting, at CPU scale.

A pretrained base (``experiments/coe/base_model``, made by ``experiments.coe.base`` on a domain-neutral corpus),
three domains of new FFN knowledge (facts, new operators, new built-in functions) and a collaboration task
that needs two of them (a new function of a new operator's result). From the base, per seed: the three
FFN-only experts, mixed SFT on the union, CoE-3E2A and its ablations, stage 2 with the same step budget as
mixed SFT. Every model is graded greedily on the same problems of each column; the routers are probed on
held-out items. The protocol (``coe_report.protocol``) is written to results.md before anything runs.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from experiments.coe.base import ASSET
from experiments.coe.report import plot_columns, protocol, results_markdown, summarise
from mentor.coe.freezing import freeze_for_expert_training, freeze_for_stage2
from mentor.coe.inspect import resource_row
from mentor.coe.recipe import (
    CoEConfig,
    assemble_step,
    inspect_step,
    label_step,
    load_category_examples,
    train_expert,
    train_router_step,
)
from mentor.coe.routing import RouterLogitsRecorder
from mentor.config import SFTConfig
from mentor.errors import MentorError
from mentor.evaluation.accuracy import evaluate
from mentor.models.loading import load_model, load_tokenizer
from mentor.recipes.common import quiet_transformers
from mentor.recipes.sft import run_sft
from mentor.tasks.coe_tasks import DOMAIN_COLLABORATION_TASK, DOMAIN_TASKS
from mentor.tasks.registry import get_task
from mentor.train.progress import console
from mentor.train.run_dir import RunDirectory


@dataclass
class BenchScale:
    expert_steps: int  # each expert; mixed SFT and every stage 2 get 3x this (the same budget)
    batch_size: int
    eval_size: int  # problems per column
    seeds: tuple[int, ...]
    learning_rate: float = 2e-3
    warmup_steps: int = 20

    @property
    def union_steps(self) -> int:
        return len(DOMAIN_TASKS) * self.expert_steps


FULL = BenchScale(expert_steps=100, batch_size=32, eval_size=200, seeds=(0, 1))
QUICK = BenchScale(expert_steps=10, batch_size=16, eval_size=40, seeds=(0, 1), warmup_steps=3)
MAX_NEW_TOKENS = 32
COLUMNS = {**DOMAIN_TASKS, "collaboration": DOMAIN_COLLABORATION_TASK}

# name -> stage-2 overrides (the paper's ablations, one flag each)
VARIANTS = {
    "CoE-3E2A": {},
    "CoE-3E2A, no routing loss": {"router_loss": "none"},
    "CoE-3E2A, stage 2 trains all (full)": {"train": "full"},
    "CoE-3E2A, stage 2 trains routers only": {"train": "router"},
    "MoE-3E2A from base-FFN copies": {"expert_init": "copies", "num_experts": 3},
    "MoE-2E2A from base-FFN copies": {"expert_init": "copies", "num_experts": 2},
}


def run_bench(out: str = "experiments/coe", quick: bool = False, base: str | None = None, **knobs) -> dict:
    """Run the bench into ``out``; ``knobs`` override fields of the scale (``expert_steps``, ``seeds``, ...)."""
    quiet_transformers()
    scale = replace(QUICK if quick else FULL, **{k: v for k, v in knobs.items() if v is not None})
    base_dir = Path(base) if base else ASSET
    if not (base_dir / "config.json").exists():
        raise MentorError(f"no CoE base at {base_dir}: build it with python -m experiments.coe.base --out {base_dir}")
    # toy-sized matrices: thread start-up costs more than the math (25x slower with 2 threads on a busy CPU)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_bench(Path(out), scale, base_dir, quick)
    finally:
        torch.set_num_threads(threads)


def _run_bench(root: Path, scale: BenchScale, base: Path, quick: bool) -> dict:
    work = _fresh_work_dir(root, scale)
    (root / "results.md").write_text(protocol(scale, base, VARIANTS, quick) + "\n(running)\n")
    started = time.perf_counter()
    data = _write_domain_data(work / "data.jsonl")
    base_row = _evaluate_model("base", base, scale)  # greedy and untouched by seeds: evaluated once
    results = {
        "base": {"model": "base", **_without_seeds(base_row), "seeds": {s: base_row["seeds"] for s in scale.seeds}}
    }
    for seed in scale.seeds:
        console.rule(f"seed {seed}")
        for name, row in _run_seed(work / f"seed{seed}", scale, base, data, seed).items():
            results.setdefault(name, {"model": name, "seeds": {}, **_without_seeds(row)})["seeds"][seed] = row["seeds"]
    result = {
        "scale": {**asdict(scale), "union_steps": scale.union_steps},
        "base": str(base),
        "rows": list(results.values()),
        "minutes": (time.perf_counter() - started) / 60,
        "cpus": os.cpu_count(),
    }
    result["summary"] = summarise(result["rows"], list(COLUMNS), list(DOMAIN_TASKS))
    _write_inspection(root, work / f"seed{scale.seeds[0]}", scale)
    plot_columns(result, root / "accuracy.png")
    (root / "results.json").write_text(json.dumps(result, indent=1))
    (root / "results.md").write_text(protocol(scale, base, VARIANTS, quick) + "\n" + results_markdown(result))
    console.print((root / "results.md").read_text())
    return result


def _fresh_work_dir(root: Path, scale: BenchScale) -> Path:
    """A bench starts from scratch (no run is resumed), but clears only a runs/ folder it made itself."""
    work = root / "runs"
    if work.exists() and "data.jsonl" not in RunDirectory(work).owned() and any(work.iterdir()):
        raise MentorError(
            f"{work} exists and was not made by mentor bench coe, which clears its runs/ folder: "
            "choose another --out (or remove that folder yourself)"
        )
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    RunDirectory(work).own("data.jsonl", *(f"seed{s}" for s in scale.seeds))
    return work


def _write_domain_data(path: Path) -> Path:
    """Each domain's training data, labelled with its domain (the paper's step 1: a labeller that is right)."""
    with path.open("w") as handle:
        for category, task_name in DOMAIN_TASKS.items():
            for p in get_task(task_name).training_data():
                handle.write(json.dumps({"prompt": p.prompt, "completion": p.solution, "category": category}) + "\n")
    return path


def _run_seed(work: Path, scale: BenchScale, base: Path, data: Path, seed: int) -> dict[str, dict]:
    common = dict(
        base=str(base),
        data=str(data),
        labeler="field",
        categories=",".join(DOMAIN_TASKS),
        batch_size=scale.batch_size,
        learning_rate=scale.learning_rate,
        adam_beta2=0.99,
        expert_steps=scale.expert_steps,
        steps=scale.union_steps,
        seed=seed,
        overwrite=True,
        quiet=True,
        lr_schedule="cosine",
        warmup_steps=min(scale.warmup_steps, scale.expert_steps),
        sample_log_every=0,
    )
    shared = CoEConfig(output_dir=str(work / "coe_shared"), **common)
    label_step(shared)
    models = {"mixed SFT": (_mixed_sft(shared, work / "mixed_sft", scale), None)}
    models.update({f"expert {c}": (train_expert(shared, c), None) for c in shared.category_list})
    for name, overrides in VARIANTS.items():
        config = CoEConfig(output_dir=str(work / _slug(name)), **{**common, **overrides})
        _share_step1(shared, config)
        assemble_step(config)
        models[name] = (train_router_step(config), config)
    return {name: _evaluate_model(name, path, scale, config) for name, (path, config) in models.items()}


def _mixed_sft(config: CoEConfig, out: Path, scale: BenchScale) -> Path:
    """Full fine-tuning on the union of the domains (the paper's SFT baseline), 3x an expert's steps."""
    tokenizer = load_tokenizer(config.base)
    examples = load_category_examples(tokenizer, Path(config.output_dir) / "labels", config.category_list)
    sft = SFTConfig(
        model=config.base,
        data="(coe labels)",
        output_dir=str(out),
        steps=scale.union_steps,
        batch_size=scale.batch_size,
        group_size=1,
        learning_rate=scale.learning_rate,
        adam_beta2=0.99,
        lr_schedule="cosine",
        warmup_steps=config.warmup_steps,
        seed=config.seed,
        overwrite=True,
        quiet=True,
        sample_log_every=0,
    )
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


def _evaluate_model(name: str, path: Path, scale: BenchScale, config: CoEConfig | None = None) -> dict:
    """Per column, which of the test problems the model answers right; MoEs: routing on held-out tokens."""
    tokenizer, model = load_tokenizer(str(path)), load_model(str(path))
    _freeze_as_trained(name, model, config)
    row = {k: v for k, v in resource_row(name, model).items() if k != "stage"}
    correct = {}
    for column, task_name in COLUMNS.items():
        task = get_task(task_name)
        correct[column] = evaluate(model, tokenizer, task, task.test_problems(scale.eval_size), MAX_NEW_TOKENS).correct
    seeds = {"correct": correct}
    if config is not None:
        seeds["labelled_in_top_k"] = labelled_in_top_k(model, tokenizer, config.expert_count)
    console.print(f"{name}: " + ", ".join(f"{c} {sum(v) / len(v):.1%}" for c, v in correct.items()))
    return {**row, "seeds": seeds}


def _freeze_as_trained(name: str, model, config: CoEConfig | None) -> None:
    """Mark what the model's last stage trained, for the trainable-parameter column."""
    if config is not None:
        freeze_for_stage2(model, config.train)
    elif name.startswith("expert"):
        freeze_for_expert_training(model)


def _without_seeds(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "seeds"}


@torch.no_grad()
def labelled_in_top_k(model, tokenizer, num_experts: int) -> dict:
    """How often the labelled expert is among a token's top-k routed experts, on held-out items' completion
    tokens (the tokens the routing loss covers in training): per item (averaged over its tokens and layers)
    and per layer, for each domain.

    Labels wrap around when there are fewer experts than domains (as in stage 2's training).
    """
    model.eval()
    top_k = model.config.num_experts_per_tok
    recorder = RouterLogitsRecorder(model)
    out = {}
    try:
        for label, task_name in enumerate(DOMAIN_TASKS.values()):
            per_item = []  # [items, layers]: the share of the item's completion tokens routed via its label
            for problem in get_task(task_name).heldout():
                prompt = tokenizer(problem.prompt)["input_ids"]
                completion = tokenizer(problem.solution, add_special_tokens=False)["input_ids"]
                model(input_ids=torch.tensor([prompt + completion + [tokenizer.eos_token_id]]))
                chosen = torch.stack(
                    [layer[len(prompt) :].topk(top_k, dim=-1).indices for layer in recorder.take()]
                )  # [layers, tokens, k]
                per_item.append((chosen == label % num_experts).any(-1).float().mean(-1).tolist())
            out[task_name] = {
                "per_item": [sum(layers) / len(layers) for layers in per_item],
                "per_layer": torch.tensor(per_item).mean(0).tolist(),
            }
    finally:
        recorder.remove()
    return out


def _write_inspection(root: Path, seed_work: Path, scale: BenchScale) -> None:
    """The routing figure (routing.png / routing.html) and expert usage of the first seed's CoE-3E2A."""
    model = seed_work / _slug("CoE-3E2A") / "stage2" / "final"
    prompts = {c: [p.prompt for p in get_task(t).test_problems(min(scale.eval_size, 50))] for c, t in COLUMNS.items()}
    inspect_step(str(model), root, prompts, list(DOMAIN_TASKS), MAX_NEW_TOKENS)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")
