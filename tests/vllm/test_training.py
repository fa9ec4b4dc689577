"""Training with ``--sampler vllm`` on a real engine: OPD's importance ratio is 1 on every fresh batch, RL runs,
``sft --from-teacher`` samples through the engine, and ``mentor eval --sampler vllm`` grades as transformers."""

from __future__ import annotations

import json

import pytest

from mentor.cli import main
from mentor.config import DistillConfig, RLConfig, SFTConfig
from mentor.recipes.distill import run_distill
from mentor.recipes.rl import run_rl
from mentor.recipes.sft import TEACHER_CACHE, run_sft

TRAIN = dict(
    steps=3,
    batch_size=4,
    group_size=2,
    max_new_tokens=12,
    learning_rate=1e-3,
    num_substeps=1,
    quiet=True,
    seed=5,
    sampler="vllm",
    vllm_enforce_eager=True,
)  # tests/vllm/test_sampler.py: compiled


def _steps(history: list[dict]) -> list[dict]:
    return [row for row in history if "loss" in row]


def test_opd_with_the_vllm_sampler_sees_ratio_one_on_every_fresh_batch(engine_dirs, tmp_path):
    config = DistillConfig(
        student=engine_dirs["student"],
        teacher=engine_dirs["teacher"],
        task="arithmetic",
        eval_size=8,
        eval_every=2,
        output_dir=str(tmp_path / "opd"),
        **TRAIN,
    )
    trainer, history = run_distill(config)
    steps = _steps(history)
    assert len(steps) == 3
    for row in steps:  # one substep: the batch was sampled from exactly the weights being trained
        assert row["ratio_mean"] == pytest.approx(1.0, abs=1e-3) and row["ratio_max"] < 1 + 1e-3, row
        assert row["reverse_kl"] > 0
    assert sum("accuracy" in row for row in history) >= 2  # evaluated greedily through the same engine
    assert (trainer.run.path / "final" / "model.safetensors").exists()


def test_rl_with_the_vllm_sampler(engine_dirs, tmp_path):
    # the random student scores 0: its signal is the KL penalty to the reference, so every step trains
    config = RLConfig(
        model=engine_dirs["student"],
        reference=engine_dirs["teacher"],
        kl_coef=1.0,
        task="arithmetic",
        eval_size=4,
        output_dir=str(tmp_path / "rl"),
        **TRAIN,
    )
    _, history = run_rl(config)
    assert len(_steps(history)) == 3
    for row in _steps(history):
        assert row["ratio_mean"] == pytest.approx(1.0, abs=1e-3) and row["ratio_max"] < 1 + 1e-3, row


def test_sft_from_teacher_draws_its_samples_through_the_engine(engine_dirs, tmp_path):
    config = SFTConfig(
        model=engine_dirs["student"],
        from_teacher=engine_dirs["teacher"],
        task="arithmetic",
        teacher_prompts=6,
        teacher_samples=2,
        sampler="vllm",
        vllm_enforce_eager=True,
        steps=2,
        batch_size=4,
        eval_size=4,
        max_new_tokens=16,
        train_size=50,
        output_dir=str(tmp_path / "sft"),
        quiet=True,
    )
    trainer, _ = run_sft(config)
    lines = (trainer.run.path / TEACHER_CACHE).read_text().splitlines()
    records = [json.loads(line) for line in lines[1:]]
    assert len(records) == 12 and all(r["completion_ids"] for r in records)
    eos = 2  # the char tokenizer's <eos>: a completion ends with it unless it was cut at --max-new-tokens
    assert all(r["truncated"] or r["completion_ids"][-1] == eos for r in records)


def test_eval_through_vllm_grades_as_transformers_does(engine_dirs, tmp_path, capsys):
    results = {}
    for sampler in ("hf", "vllm"):
        records = tmp_path / f"{sampler}.jsonl"
        assert (
            main(
                [
                    "eval",
                    engine_dirs["teacher"],
                    "--task",
                    "arithmetic",
                    "--size",
                    "16",
                    "--max-new-tokens",
                    "24",
                    "--sampler",
                    sampler,
                    "--records",
                    str(records),
                ]
            )
            == 0
        )
        results[sampler] = [json.loads(line)["completion"] for line in records.read_text().splitlines()]
    assert results["vllm"] == results["hf"]  # greedy, float32: the same answers
