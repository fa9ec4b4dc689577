"""The pretrained base of ``mentor bench coe``: a tiny Qwen3 trained from random init as a causal LM on a
domain-neutral corpus generated in code, by the project's own SFT trainer (the loss covers every token).

The corpus (``mentor.tasks.coe_tasks.neutral_corpus``) holds other entities' facts, four known operators on
digits, four known functions on 0..99 and their compositions ``fn(a op b)=a op b=x;fn(x)=y;y``: the formats
and the composition skill the bench's domains need, none of the domains' knowledge (tested).

Rebuild the shipped asset (about 1 MB; a few minutes on 2 cores):

    python -m experiments.coe.base --out experiments/coe/base_model
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mentor.config import SFTConfig
from mentor.data.prompts import EncodedExample
from mentor.evaluation.accuracy import evaluate
from mentor.models.loading import load_model, load_tokenizer
from mentor.models.tiny import build_char_tokenizer, build_tiny_model, save_tiny, tiny_config
from mentor.recipes.common import quiet_transformers
from mentor.recipes.sft import run_sft
from mentor.tasks.coe_tasks import OperatorFunctionTask, neutral_corpus, neutral_items

ASSET = Path(__file__).resolve().parent / "base_model"


@dataclass
class BaseRecipe:
    hidden: int = 64
    layers: int = 4
    heads: int = 4
    intermediate: int = 256  # the FFN the experts train: where the domains' knowledge has to fit
    max_positions: int = 64
    steps: int = 2500
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    seed: int = 0


def corpus_examples(tokenizer, lines: list[str]) -> list[EncodedExample]:
    """Causal LM text: BOS as the prompt, the whole line (and EOS) as the trained completion."""
    return [
        EncodedExample(
            [tokenizer.bos_token_id],
            list(tokenizer(line, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id],
            text=line,
        )
        for line in lines
    ]


def pretrain_base(
    out: str | Path = ASSET, recipe: BaseRecipe = BaseRecipe(), quiet: bool = False, accuracy_items: int = 200
) -> Path:
    """Pretrain the base and write it to ``out`` with its corpus and a record of how it was made (and its
    greedy accuracy on ``accuracy_items`` corpus items of each kind)."""
    quiet_transformers()
    out = Path(out)
    tokenizer = build_char_tokenizer()
    lines = neutral_corpus()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        config = tiny_config(
            "qwen3",
            len(tokenizer),
            recipe.hidden,
            recipe.layers,
            recipe.heads,
            recipe.intermediate,
            recipe.max_positions,
            tokenizer,
        )
        init = save_tiny(build_tiny_model(config, seed=recipe.seed), tokenizer, Path(work) / "init")
        sft = SFTConfig(
            model=str(init),
            data="(neutral corpus)",
            output_dir=str(Path(work) / "run"),
            steps=recipe.steps,
            batch_size=recipe.batch_size,
            group_size=1,
            learning_rate=recipe.learning_rate,
            lr_schedule="cosine",
            warmup_steps=recipe.warmup_steps,
            adam_beta2=0.99,
            seed=recipe.seed,
            quiet=quiet,
            sample_log_every=0,
        )
        trainer, history = run_sft(sft, tokenizer=tokenizer, examples=corpus_examples(tokenizer, lines))
        losses = [h["loss"] for h in history if "loss" in h]
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(trainer.run.path / "final", out)
    (out / "corpus.txt").write_text("\n".join(lines) + "\n")
    record = {
        "recipe": asdict(recipe),
        "corpus_lines": len(lines),
        "minutes": (time.perf_counter() - started) / 60,
        "loss_first": losses[0],
        "loss_last_100_mean": sum(losses[-100:]) / len(losses[-100:]),
        "command": "python -m experiments.coe.base --out experiments/coe/base_model",
    }
    record["greedy_accuracy_on_corpus"] = corpus_accuracy(out, accuracy_items)
    (out / "pretraining.json").write_text(json.dumps(record, indent=1) + "\n")
    return out


def corpus_accuracy(path: str | Path, per_kind: int = 200) -> dict[str, float]:
    """Greedy accuracy of a base on (up to ``per_kind``) items of each kind of its own corpus: did it learn it?"""
    tokenizer, model = load_tokenizer(str(path)), load_model(str(path))
    grader = OperatorFunctionTask()  # every CoE item is graded by its last field
    accuracy = {}
    for kind, items in neutral_items().items():
        problems = random.Random(0).sample(items, min(per_kind, len(items)))
        accuracy[kind] = evaluate(model, tokenizer, grader, problems, max_new_tokens=32).accuracy
    return accuracy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ASSET))
    parser.add_argument("--steps", type=int, default=BaseRecipe.steps)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # toy matrices: thread start-up costs more than the math
    pretrain_base(args.out, BaseRecipe(steps=args.steps))


if __name__ == "__main__":
    main()
