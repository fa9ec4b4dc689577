"""SFT recipe: tokens from data (or sampled once from a teacher), cross-entropy on completion tokens."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from mentor.algorithms.sft import SupervisedFineTuning
from mentor.backends import close_sampler, make_sampler, make_teacher
from mentor.config import SFTConfig
from mentor.data.prompts import EncodedExample
from mentor.evaluation.flops import MatmulParams, forward_flops
from mentor.recipes.builder import Parts, Recipe, run_recipe
from mentor.recipes.common import file_examples, task_examples
from mentor.train.ledger import ComputeLedger
from mentor.train.run_dir import RunDirectory
from mentor.train.trainer import Trainer

logger = logging.getLogger(__name__)
TEACHER_CACHE = "teacher_samples.jsonl"


def run_sft(config: SFTConfig, model=None, tokenizer=None, examples=None) -> tuple[Trainer, list[dict]]:
    offline: dict[str, float] = {}  # the teacher's sampling FLOPs, when it wrote the data (--from-teacher)
    logit_teacher: dict[str, object] = {}  # --sft-loss forward_kl: the teacher model, loaded once

    def teacher_model(parts: Parts):
        if "model" not in logit_teacher:
            loaded = make_teacher(config.from_teacher, config, parts.tokenizer, parts.model).teacher
            logit_teacher["model"] = loaded.model.eval()
        return logit_teacher["model"]

    def sft_examples(parts: Parts) -> list[EncodedExample]:
        if config.from_teacher:
            loaded = teacher_model(parts) if config.sft_loss == "forward_kl" else None
            found, flops = teacher_examples(config, parts.tokenizer, parts.model, parts.task, loaded)
            offline.update(flops)
            return found
        if config.data:
            return file_examples(config.data, parts.tokenizer, parts.model, config, need_completion=True)
        return task_examples(
            parts.task,
            parts.tokenizer,
            config.train_size,
            config.seed,
            chat_template=config.chat_template,
            model=parts.model,
        )

    def algorithm(parts: Parts) -> SupervisedFineTuning:
        teacher = teacher_model(parts) if config.sft_loss == "forward_kl" else None
        return SupervisedFineTuning(parts.tokenizer.pad_token_id, logit_teacher=teacher)

    def ledger(parts: Parts) -> ComputeLedger:
        teacher = logit_teacher.get("model")
        return ComputeLedger(teacher_params=MatmulParams.of(teacher).total if teacher else None, offline=offline)

    progress = ("loss", "forward_kl", "accuracy") if config.sft_loss == "forward_kl" else ("loss", "accuracy")
    recipe = Recipe(config.model, sft_examples, algorithm, progress, ledger=ledger)
    return run_recipe(config, recipe, model, tokenizer, examples)


# --- off-policy distillation: the teacher writes the data once --------------------------------------
def teacher_examples(
    config: SFTConfig, tokenizer, student, task, teacher=None
) -> tuple[list[EncodedExample], dict[str, float]]:
    """``--teacher-samples`` completions per prompt from ``--from-teacher`` (``teacher``: its model, already
    loaded), cached in the run directory.

    Returns the examples and the teacher's sampling FLOPs, which the run's ledger counts from step 0
    whether the samples were drawn now or read from the cache (the cost was paid for this run either way).
    """
    prompts = _teacher_prompts(config, tokenizer, student, task)
    cache = Path(config.output_dir) / TEACHER_CACHE
    key = _cache_key(config, prompts)
    records = _read_cache(cache, key)
    cached = records is not None
    if not cached:
        records = _sample_teacher(config, tokenizer, student, prompts, teacher)
    # the cache is the run's first file: the run directory is claimed first (--overwrite clears only what
    # mentor wrote there, the old cache included, which is rewritten from memory)
    RunDirectory(config.output_dir).claim(config, config.overwrite, config.resume)
    if not cached or not cache.exists():
        with cache.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps({"key": key, "teacher_params": records[0]["teacher_params"]}) + "\n")
            for r in records:
                handle.write(json.dumps(r) + "\n")
    if cached:
        logger.info(f"teacher samples: {len(records)} read from {cache} (not re-sampled)")
    by_text = {p.text: p for p in prompts}
    examples = [
        EncodedExample(r["prompt_ids"], r["completion_ids"], r["prompt"], by_text[r["prompt"]].reference)
        for r in records
    ]
    tokens = sum(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in records)
    return examples, {"flops_teacher_sample": forward_flops(records[0]["teacher_params"], tokens)}


def _teacher_prompts(config: SFTConfig, tokenizer, student, task) -> list[EncodedExample]:
    if config.data:
        prompts = file_examples(config.data, tokenizer, student, config)
    else:
        prompts = task_examples(
            task, tokenizer, config.teacher_prompts or config.train_size, config.seed, with_solution=False
        )
    return prompts[: config.teacher_prompts] if config.teacher_prompts else prompts


def _cache_key(config: SFTConfig, prompts: list[EncodedExample]) -> str:
    what = [
        config.from_teacher,
        config.teacher_samples,
        config.teacher_temperature,
        config.max_new_tokens,
        config.seed,
        [p.prompt_ids for p in prompts],
    ]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def _read_cache(path: Path, key: str) -> list[dict] | None:
    if not path.exists():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0]) if lines else {}
    if header.get("key") != key:
        return None
    return [dict(json.loads(line), teacher_params=header["teacher_params"]) for line in lines[1:]]


def _sample_teacher(config: SFTConfig, tokenizer, student, prompts: list[EncodedExample], teacher=None) -> list[dict]:
    import torch

    # the teacher is checked and loaded as distillation's is (vocabulary, output layer, turn ends), then samples
    if teacher is None:
        teacher = make_teacher(config.from_teacher, config, tokenizer, student).teacher.model
    params = MatmulParams.of(teacher).total
    sampler = make_sampler(config, teacher, tokenizer, config.from_teacher, temperature=config.teacher_temperature)
    repeated = [p for p in prompts for _ in range(config.teacher_samples)]
    logger.info(
        f"teacher samples: drawing {len(repeated)} completions ({config.teacher_samples} per prompt) "
        f"from {config.from_teacher}"
    )
    try:
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            sampled = sampler.sample([p.prompt_ids for p in repeated])
    finally:
        close_sampler(sampler)
    # a completion cut by max_new_tokens has no end-of-turn token: trained on as is (the student learns to go on)
    return [
        {"prompt": p.text, "prompt_ids": p.prompt_ids, "completion_ids": c, "truncated": cut, "teacher_params": params}
        for p, c, cut in zip(repeated, sampled.completion_ids, sampled.truncated)
    ]
