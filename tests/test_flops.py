"""FLOP accounting against a hand count for a tiny Qwen3, with and without LoRA, and in a real run."""

import json

from transformers import AutoModelForCausalLM

from mentor.evaluation.flops import ComputeLedger, MatmulParams, training_flops
from mentor.models.loading import apply_lora
from tests.conftest import make_model_dir


def hand_count(hidden, layers, heads, vocab):
    head_dim, kv_heads, inter = hidden // heads, max(1, heads // 2), 3 * hidden
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o + k, v (no biases)
    mlp = 3 * hidden * inter  # gate, up, down
    return layers * (attention + mlp) + vocab * hidden  # + the (tied) output head's matmul


def test_matmul_params_match_hand_count(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(make_model_dir(tmp_path / "m", hidden=32, layers=2, heads=4))
    n = hand_count(32, 2, 4, model.config.vocab_size)
    params = MatmulParams.of(model)
    assert params == MatmulParams(n, n)
    assert training_flops(params, 10) == 6 * n * 10  # forward 2N + backward 4N per token


def test_lora_backward_counts_only_adapter_weight_gradients(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(make_model_dir(tmp_path / "m", hidden=32, layers=2, heads=4))
    base = MatmulParams.of(model).total
    lora = apply_lora(model, rank=4, alpha=8, target_modules=["q_proj", "v_proj"])
    params = MatmulParams.of(lora)
    head_dim, kv = 8, 2
    # per layer: q (32 -> 32) and v (32 -> 16) each get A [r x in] and B [out x r]
    adapters = 2 * (4 * 32 + 32 * 4 + 4 * 32 + kv * head_dim * 4)
    assert params.trainable == adapters
    assert params.total == base + adapters
    assert training_flops(params, 1) == 2 * (base + adapters) + 2 * (base + adapters) + 2 * adapters


def test_ledger_cumulates_teacher_and_student():
    ledger = ComputeLedger(teacher_params=1000, offline={"flops_teacher_sample": 5.0})
    ledger.student = MatmulParams(100, 100)
    ledger.params["student"] = 100
    first = ledger.record_step(10, {"sampled_tokens": 10, "teacher_tokens": 10})
    assert first["flops_student_train"] == 6000 and first["flops_student_sample"] == 2000
    assert first["flops_teacher_score"] == 20000 and first["flops_teacher"] == 20005
    second = ledger.record_step(10, {"sampled_tokens": 10, "teacher_tokens": 10})
    assert second["flops_total"] == 2 * (6000 + 2000 + 20000) + 5


def test_distill_run_logs_cumulative_flops(tiny_dirs, tmp_path):
    from mentor.config import DistillConfig
    from mentor.recipes.distill import run_distill

    config = DistillConfig(student=tiny_dirs["student"], teacher=tiny_dirs["teacher"], task="arithmetic",
                           output_dir=str(tmp_path / "run"), steps=2, batch_size=2, group_size=2,
                           max_new_tokens=8, eval_size=4, quiet=True)
    trainer, _ = run_distill(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "flops_student_train" in r]
    student_n = MatmulParams.of(trainer.model).total
    teacher_n = MatmulParams.of(AutoModelForCausalLM.from_pretrained(tiny_dirs["teacher"])).total
    tokens = sum(r["tokens"] for r in steps)
    last = steps[-1]
    assert last["flops_student_train"] == 6 * student_n * tokens
    assert last["flops_student_sample"] == 2 * student_n * tokens  # every sequence token passed the sampler
    assert last["flops_teacher_score"] == 2 * teacher_n * tokens
    assert steps[0]["flops_total"] < last["flops_total"]
    assert "| teacher |" in (tmp_path / "run" / "summary.md").read_text()


def test_sft_from_teacher_samples_once_and_counts_the_teacher(tiny_dirs, tmp_path):
    from mentor.cli import main

    out = tmp_path / "sft"
    args = ["sft", "--model", tiny_dirs["student"], "--from-teacher", tiny_dirs["teacher"], "--task", "arithmetic",
            "--teacher-prompts", "6", "--teacher-samples", "2", "--max-new-tokens", "12", "--output-dir", str(out),
            "--batch-size", "4", "--group-size", "1", "--eval-size", "4", "--quiet"]
    assert main(args + ["--steps", "1"]) == 0
    cache = (out / "teacher_samples.jsonl").read_text().splitlines()
    assert len(cache) == 1 + 12  # header + 6 prompts x 2 samples
    rows = [json.loads(line) for line in cache[1:]]
    teacher_n = json.loads(cache[0])["teacher_params"]
    expected = 2 * teacher_n * sum(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in rows)
    first = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert first["flops_teacher_sample"] == expected and first["flops_teacher"] == expected
    mtime = (out / "teacher_samples.jsonl").stat().st_mtime_ns
    assert main(args + ["--steps", "2"]) == 0  # a longer run in the same directory reuses the samples
    assert (out / "teacher_samples.jsonl").stat().st_mtime_ns == mtime


def test_multi_teacher_scores_each_data_set_with_its_teacher(tiny_dirs, tmp_path):
    """tinker-cookbook's multi-teacher recipe: --teacher a=T1,b=T2 --prompts a=F1,b=F2, in one run."""
    from mentor.cli import main

    (tmp_path / "a.jsonl").write_text('{"prompt": "12+3="}\n{"prompt": "4*5+1="}\n')
    (tmp_path / "b.jsonl").write_text('{"prompt": "7+8+9="}\n')
    out = tmp_path / "multi"
    other = make_model_dir(tmp_path / "other_teacher", hidden=16, layers=1, heads=2, seed=9)
    code = main(["distill", "--student", tiny_dirs["student"], "--teacher", f"a={tiny_dirs['teacher']},b={other}",
                 "--prompts", f"a={tmp_path / 'a.jsonl'},b={tmp_path / 'b.jsonl'}", "--output-dir", str(out),
                 "--steps", "1", "--batch-size", "3", "--group-size", "2", "--max-new-tokens", "6", "--quiet"])
    assert code == 0
    record = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    big = MatmulParams.of(AutoModelForCausalLM.from_pretrained(tiny_dirs["teacher"])).total
    small = MatmulParams.of(AutoModelForCausalLM.from_pretrained(other)).total
    assert big > small
    # the three prompts (2 from a, 1 from b) x 2 samples: each scored by its own teacher's size
    assert 2 * small * record["tokens"] < record["flops_teacher_score"] < 2 * big * record["tokens"]
