"""Collaborative and Semantic Experts (CoE): label -> FFN experts -> MoE assembly -> expert utilisation.

Every step is a function here and a ``mentor coe <step>`` subcommand; ``run_coe`` runs them all into one
directory:

    out/labels/<category>.jsonl, labels.json, labels.png     step 1
    out/experts/<category>/final                             step 2 (SFT, only FFN weights train)
    out/moe                                                  step 3 (Mixtral / Qwen3-MoE, untrained routers)
    out/stage2/final                                         step 4 (SFT + routing loss, expert MLPs frozen)
    out/inspect/routing.png, routing.html, usage.json        step 6
    out/resources.json                                       params / trainable / training-state memory
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from mentor.coe.assemble import assemble_moe, save_moe, write_portable_config
from mentor.coe.freezing import STAGE2_VARIANTS, freeze_for_expert_training, freeze_for_stage2
from mentor.coe.inspect import expert_usage, plot_routing, resource_row, routing_html, routing_trace
from mentor.coe.labeling import label_records, make_labeler, record_text
from mentor.coe.routing import ROUTER_LOSSES, CoEExpertUtilization
from mentor.config import DataConfig, SFTConfig, TrainConfig, redefault, require_warmup_within, setting
from mentor.data.prompts import ExampleStream, encode_examples, load_examples, read_data_file, read_jsonl
from mentor.errors import MentorError
from mentor.models.chat import stop_token_ids
from mentor.models.loading import load_model, load_tokenizer
from mentor.recipes.common import quiet_transformers
from mentor.recipes.sft import run_sft
from mentor.train.run_dir import RunDirectory
from mentor.train.trainer import Trainer


@dataclass
class CoEConfig(DataConfig, TrainConfig):
    """CoE: --steps is stage 2 (the router), --expert-steps each expert's FFN-only SFT."""

    base: str = setting("", "the dense base model: a Llama/Mistral/Qwen3 directory or hub id")
    builtin: bool = setting(False, "the built-in general/math/coding data (mentor.tasks.coe_tasks) instead of --data")
    train_size: int = redefault(DataConfig, "train_size", 3000)
    categories: str = setting("general,math,coding", "comma list of categories: one expert each")
    labeler: str = setting("field", "field (records carry `category`), keyword (regex rules) or llm")
    labeler_model: str = setting("", "--labeler llm: a local model directory, or http://host:port[/v1]#model-name")
    expert_steps: int = setting(100, "stage 1: each expert's FFN-only SFT steps")
    trainable_tokens: str = setting("", "comma list of new special tokens whose embedding rows also train in stage 1")
    expert_learning_rate: float = setting(0.0, "stage 1 learning rate (0: --learning-rate)")
    top_k: int = setting(2, "experts routed to per token")
    num_experts: int = setting(0, "experts with --expert-init copies (0: one per category)")
    expert_init: str = setting(
        "trained", "trained (one FFN-trained expert per category) or copies (the MoE-from-copies ablation)"
    )
    train: str = setting("non-ffn", "what stage 2 trains: non-ffn, full or router")
    router_loss: str = setting("margin", "stage 2 routing loss: margin, ce or none")
    router_loss_coef: float = setting(1.0, "weight of the routing loss")
    group_size: int = redefault(TrainConfig, "group_size", 1)
    batch_size: int = redefault(TrainConfig, "batch_size", 32)

    def check_own(self) -> None:
        if not self.base:
            raise MentorError("coe needs --base (a Llama/Mistral/Qwen3 model directory or hub id)")
        if not self.data and not self.builtin:
            raise MentorError("coe needs --data FILE.jsonl (prompt, completion[, category]) or --builtin")
        if self.train not in STAGE2_VARIANTS:
            raise MentorError(f"--train {self.train!r} is unknown: use {', '.join(STAGE2_VARIANTS)}")
        if self.router_loss not in ROUTER_LOSSES:
            raise MentorError(f"--router-loss {self.router_loss!r} is unknown: use {', '.join(ROUTER_LOSSES)}")
        if self.expert_init not in ("trained", "copies"):
            raise MentorError("--expert-init must be 'trained' or 'copies'")
        if self.expert_init == "trained" and self.num_experts not in (0, len(self.category_list)):
            raise MentorError("--num-experts differs from the number of categories: use --expert-init copies")
        # the rest is checked here, before any expert trains, not when the MoE is assembled
        names = self.category_list
        if not names:
            raise MentorError("--categories is empty: name the categories, e.g. general,math,coding")
        bad = [c for c in names if not re.fullmatch(r"[A-Za-z0-9][\w-]*", c)]
        if bad or len(set(names)) != len(names):
            raise MentorError(
                f"--categories must be distinct names of letters, digits, _ and - (got "
                f"{(bad or names)[0]!r}): each becomes a file and an expert"
            )
        if self.labeler not in ("field", "keyword", "llm"):
            raise MentorError(f"--labeler {self.labeler!r} is unknown: use field, keyword or llm")
        if self.num_experts < 0 or not 1 <= self.top_k <= self.expert_count:
            raise MentorError(f"--top-k must lie in 1..{self.expert_count} (the number of experts; got {self.top_k})")
        for name in ("expert_steps", "train_size"):
            if getattr(self, name) < 1:
                raise MentorError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.expert_init == "trained":  # each expert's SFT warms up too
            require_warmup_within(
                self.warmup_steps,
                self.expert_steps * self.num_substeps,
                "--expert-steps x --num-substeps, of each expert",
            )
        if self.expert_learning_rate < 0 or self.router_loss_coef < 0:
            raise MentorError("--expert-learning-rate and --router-loss-coef cannot be negative")

    @property
    def category_list(self) -> list[str]:
        return [c.strip() for c in self.categories.split(",") if c.strip()]

    @property
    def expert_count(self) -> int:
        return self.num_experts or len(self.category_list)


# --- step 1 -------------------------------------------------------------------------------------------
def builtin_records(train_size: int, seed: int) -> list[dict]:
    from mentor.tasks.coe_tasks import CATEGORY_TASKS
    from mentor.tasks.registry import get_task

    records = []
    for category, task_name in CATEGORY_TASKS.items():
        for p in get_task(task_name).train_problems(train_size, seed):
            records.append({"prompt": p.prompt, "completion": p.solution, "category": category, "source": category})
    return records


def label_step(config: CoEConfig) -> Path:
    records = builtin_records(config.train_size, config.seed) if config.builtin else read_jsonl(config.data)
    labeler = make_labeler("field" if config.builtin else config.labeler, config.category_list, config.labeler_model)
    # everything CoE writes goes under --output-dir by these names: claimed (recorded) before the first write
    RunDirectory(config.output_dir).claim_entries("labels", "experts", "moe", "stage2", "inspect", "resources.json")
    out = Path(config.output_dir) / "labels"
    label_records(records, labeler, out, config.category_list)
    return out


def load_category_examples(tokenizer, labels_dir: Path, categories: list[str], only: str | None = None, model=None):
    """Encoded SFT examples (``prompt``/``completion`` or chat ``messages`` ending with the assistant's turn);
    ``reference`` holds the category index (the routing label). ``model``'s generation config says which
    tokens end a chat turn."""
    earlier_step(labels_dir, "label")
    examples, stop_ids = [], stop_token_ids(tokenizer, model)
    for index, category in enumerate(categories):
        if only is not None and category != only:
            continue
        path = _labelled(labels_dir, category)
        if path is None:
            if only is not None:
                raise MentorError(
                    f"no record was labelled {category!r} (in {labels_dir}): an expert needs training data"
                )
            continue  # the labeler put nothing in this category: no routing data for it
        encoded, _ = encode_examples(
            tokenizer, load_examples(path, need_completion=True), need_completion=True, stop_ids=stop_ids
        )
        for e in encoded:
            e.reference = index
        examples += encoded
    return examples


# --- step 2 -------------------------------------------------------------------------------------------
def train_expert(config: CoEConfig, category: str) -> Path:
    """SFT of the base on one category with only FFN weights (and new tokens' embedding rows) trainable."""
    quiet_transformers()
    earlier_step(Path(config.output_dir) / "labels", "label")
    tokenizer = load_tokenizer(config.base)
    model = load_model(config.base, config.dtype)
    freeze_for_expert_training(model, _token_ids(tokenizer, config.trainable_tokens))
    examples = load_category_examples(
        tokenizer, Path(config.output_dir) / "labels", config.category_list, category, model
    )
    sft = _sft_config(
        config,
        Path(config.output_dir) / "experts" / category,
        config.expert_steps,
        config.expert_learning_rate or config.learning_rate,
    )
    trainer, _ = run_sft(sft, model, tokenizer, examples)
    _record_resources(config, f"expert {category}", model)
    return trainer.run.path / "final"


def _token_ids(tokenizer, tokens: str) -> list[int]:
    ids = []
    for token in (t.strip() for t in tokens.split(",") if t.strip()):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise MentorError(f"--trainable-tokens: {token!r} is not a token of the base's tokenizer")
        ids.append(token_id)
    return ids


def _sft_config(config: CoEConfig, out: Path, steps: int, lr: float) -> SFTConfig:
    shared = {f: getattr(config, f) for f in TrainConfig.__dataclass_fields__}
    shared.update(output_dir=str(out), steps=steps, learning_rate=lr)
    return SFTConfig(model=config.base, data="(coe labels)", **shared)


# --- step 3 -------------------------------------------------------------------------------------------
def assemble_step(config: CoEConfig) -> Path:
    quiet_transformers()
    trained = (
        [earlier_step(Path(config.output_dir) / "experts" / c / "final", "train-experts") for c in config.category_list]
        if config.expert_init == "trained"
        else None
    )
    tokenizer = load_tokenizer(config.base)
    base = load_model(config.base, config.dtype)
    experts = None if trained is None else [load_model(path, config.dtype) for path in trained]
    moe = assemble_moe(base, experts, num_experts=config.expert_count, top_k=config.top_k, seed=config.seed)
    return save_moe(moe, tokenizer, Path(config.output_dir) / "moe")


# --- step 4 -------------------------------------------------------------------------------------------
def train_router_step(config: CoEConfig) -> Path:
    """SFT of the MoE on all categories (expert MLPs frozen unless --train full) plus the routing loss."""
    quiet_transformers()
    out = Path(config.output_dir)
    moe = earlier_step(out / "moe", "assemble")
    tokenizer = load_tokenizer(moe)
    model = load_model(moe, config.dtype)
    freeze_for_stage2(model, config.train)
    examples = load_category_examples(tokenizer, out / "labels", config.category_list, model=model)
    if config.expert_count < len(config.category_list):  # fewer experts than categories: labels wrap around
        for e in examples:
            e.reference %= config.expert_count
    stage2 = _sft_config(config, out / "stage2", config.steps, config.learning_rate)
    trainer = Trainer(
        stage2,
        model,
        tokenizer,
        ExampleStream(examples, config.batch_size, seed=config.seed),
        progress_keys=("loss", "router_loss"),
    )
    algorithm = CoEExpertUtilization(
        tokenizer.pad_token_id, model, config.top_k, config.router_loss, config.router_loss_coef
    )
    try:
        trainer.train(algorithm)
    finally:
        algorithm.recorder.remove()
    _record_resources(config, f"CoE stage 2 ({config.train})", model)
    return write_portable_config(trainer.save_final())


# --- step 6 -------------------------------------------------------------------------------------------
def inspect_step(
    model_path: str,
    out_dir: str | Path,
    prompts: dict[str, list[str]],
    expert_names: list[str],
    max_new_tokens: int = 32,
) -> dict:
    """Routing PNG + HTML for one prompt per category and expert usage over all given prompts."""
    quiet_transformers()
    tokenizer, model = load_tokenizer(model_path), load_model(model_path)
    if not hasattr(model.config, "num_experts_per_tok"):
        raise MentorError(f"{model_path} is not an MoE model: inspect the output of mentor coe (stage2/final)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    traces = [
        {**routing_trace(model, tokenizer, p, max_new_tokens), "category": c} for c, ps in prompts.items() for p in ps
    ]
    shown = [next(t for t in traces if t["category"] == c) for c in prompts]
    names = (
        expert_names
        if len(expert_names) == model.config.num_local_experts
        else [f"e{i}" for i in range(model.config.num_local_experts)]
    )
    usage = expert_usage(traces, len(names))
    (out / "usage.json").write_text(json.dumps({"experts": names, "usage": usage}, indent=1))
    return {
        "png": str(plot_routing(shown, names, out / "routing.png")),
        "html": str(routing_html(shown, names, out / "routing.html")),
        "usage": usage,
        "experts": names,
    }


def labelled_prompts(labels_dir: Path, categories: list[str], per_category: int = 8) -> dict[str, list[str]]:
    """The user text of the first records of each non-empty category (``prompt``, or ``messages``' user turns)."""
    earlier_step(labels_dir, "label")
    paths = {category: _labelled(labels_dir, category) for category in categories}
    return {
        category: [record_text(r) for r in read_jsonl(path)[:per_category]]
        for category, path in paths.items()
        if path is not None
    }


def _labelled(labels_dir: Path, category: str) -> Path | None:
    """The category's file from step 1, or None if no record was labelled with it."""
    path = Path(labels_dir) / f"{category}.jsonl"
    return path if read_data_file(path).strip() else None


def earlier_step(path: Path, step: str) -> str:
    """What an earlier ``mentor coe`` step wrote, as a path: a missing one names the step to run first (it is
    never looked up on the hub as if it were a model id)."""
    if not path.exists():
        raise MentorError(f"{path} does not exist: run `mentor coe {step}` first, with the same --output-dir")
    return str(path)


def _record_resources(config: CoEConfig, stage: str, model) -> None:
    path = Path(config.output_dir) / "resources.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    rows = [r for r in rows if r["stage"] != stage] + [resource_row(stage, model)]
    path.write_text(json.dumps(rows, indent=1))


def run_coe(config: CoEConfig) -> Path:
    """All steps; returns the trained MoE directory (loads with AutoModelForCausalLM, no custom code)."""
    label_step(config)
    if config.expert_init == "trained":
        for category in config.category_list:
            train_expert(config, category)
    assemble_step(config)
    final = train_router_step(config)
    from mentor.tasks.coe_tasks import CATEGORY_TASKS
    from mentor.tasks.registry import get_task

    if config.builtin:
        prompts = {c: [p.prompt for p in get_task(t).test_problems(8)] for c, t in CATEGORY_TASKS.items()}
    else:
        prompts = labelled_prompts(Path(config.output_dir) / "labels", config.category_list)
    inspect_step(str(final), Path(config.output_dir) / "inspect", prompts, config.category_list)
    return final
