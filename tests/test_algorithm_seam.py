"""The trainer/algorithm seam: an algorithm owns its loss (the trainer names none), and an update in which no
token carries a non-zero advantage skips the optimizer step (Adam's moments would otherwise move the weights
on a zero gradient) and counts it."""

import json
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mentor.algorithms.rl import ReinforcementLearning
from mentor.config import TrainConfig
from mentor.data.prompts import EncodedExample, ExampleStream
from mentor.sample.hf import HFSampler
from mentor.train.trainer import Trainer

TRAINER = Path(__file__).resolve().parents[1] / "mentor" / "train" / "trainer.py"


def test_the_trainer_names_no_algorithm_attribute():
    source = TRAINER.read_text()
    for name in (
        "kl_teacher",
        "kl_top_k",
        "kl_coef",
        "auxiliary_loss",
        "clip_ratio",
        "cross_entropy",
        "importance_sampling",
        "router",
        "divergence",
        "full_reverse_kl",
    ):
        assert not re.search(name, source), f"mentor/train/trainer.py names {name!r}: it belongs to an algorithm"


def test_a_step_without_a_non_zero_advantage_leaves_the_weights_bitwise_unchanged(tiny_dirs, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_dirs["student"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["student"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    prompts = ["1+1=", "2+2=", "3+3=", "4+4="]
    examples = [EncodedExample(tokenizer(p)["input_ids"], None, p, p) for p in prompts]
    config = TrainConfig(
        output_dir=str(tmp_path / "run"),
        steps=3,
        batch_size=2,
        group_size=2,
        learning_rate=1e-2,
        weight_decay=0.1,
        num_substeps=2,
        quiet=True,
    )
    trainer = Trainer(config, model, tokenizer, ExampleStream(examples, 2))
    # every sample gets the same reward: every group is constant, every advantage is zero
    algorithm = ReinforcementLearning(
        HFSampler(model, tokenizer, max_new_tokens=4), tokenizer, lambda c, r: 1.0, group_size=2, temperature=1.0
    )
    history = trainer.train(algorithm)
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), f"{name} moved on a zero gradient"
    assert not trainer.optimizer.state_dict()["state"]  # Adam's moments never started
    assert [r["skipped_zero_advantage_steps"] for r in history] == [2, 4, 6]  # 2 substeps a step
    assert [r["skipped_steps"] for r in history] == [0, 0, 0]  # not counted as non-finite steps
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped_zero_advantage_steps"] == 6
