"""FLOP accounting against hand counts (tiny Qwen3 with and without LoRA, GPT-2, Qwen3-MoE, Mixtral) and in a run."""

import json

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from mentor.evaluation.flops import MatmulParams, training_flops
from mentor.models.loading import apply_lora
from mentor.train.ledger import ComputeLedger
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


VOCAB, HIDDEN, LAYERS = 54, 32, 2


def test_gpt2_conv1d_layers_count():
    """GPT-2's attention and MLP are transformers ``Conv1D`` (weight [in, out] + bias), not ``nn.Linear``."""
    config = AutoConfig.for_model(
        "gpt2",
        n_embd=HIDDEN,
        n_layer=LAYERS,
        n_head=4,
        vocab_size=VOCAB,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = AutoModelForCausalLM.from_config(config)
    h = HIDDEN
    per_layer = (
        (h * 3 * h + 3 * h) + (h * h + h) + (h * 4 * h + 4 * h) + (4 * h * h + h)
    )  # c_attn, c_proj, c_fc, c_proj
    n = LAYERS * per_layer + VOCAB * h  # + the tied head
    assert MatmulParams.of(model) == MatmulParams(n, n)


def moe_hand_count(experts=4, top_k=2, inter=24, heads=4, kv_heads=2, head_dim=16):
    attention = 2 * HIDDEN * heads * head_dim + 2 * HIDDEN * kv_heads * head_dim  # q, o + k, v
    active_experts = top_k * 3 * HIDDEN * inter  # gate, up, down of the top_k experts a token goes through
    router = experts * HIDDEN
    return LAYERS * (attention + active_experts + router) + VOCAB * HIDDEN, LAYERS * experts * 3 * HIDDEN * inter


def tiny_moe(arch: str, experts=4, top_k=2):
    shared = dict(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=VOCAB,
        num_experts_per_tok=top_k,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    if arch == "qwen3_moe":
        config = AutoConfig.for_model(arch, moe_intermediate_size=24, num_experts=experts, **shared)
    else:
        config = AutoConfig.for_model(arch, intermediate_size=24, num_local_experts=experts, **shared)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("arch", ["qwen3_moe", "mixtral"])
@pytest.mark.parametrize("top_k", [1, 2])
def test_moe_counts_active_experts_and_router(arch, top_k):
    model = tiny_moe(arch, experts=4, top_k=top_k)
    n, _ = moe_hand_count(experts=4, top_k=top_k)
    assert MatmulParams.of(model) == MatmulParams(n, n)


class PerExpertBlock(nn.Module):
    """The transformers 4 layout of the same block: a Linear gate and an ``nn.ModuleList`` of expert MLPs."""

    def __init__(self, fused: nn.Module, top_k: int):
        super().__init__()
        num_experts, hidden = fused.gate.weight.shape
        inter = fused.experts.down_proj.shape[-1]
        self.top_k = top_k
        self.gate = nn.Linear(hidden, num_experts, bias=False)
        self.experts = nn.ModuleList(
            nn.ModuleDict(
                {
                    name: nn.Linear(*shape, bias=False)
                    for name, shape in (
                        ("gate_proj", (hidden, inter)),
                        ("up_proj", (hidden, inter)),
                        ("down_proj", (inter, hidden)),
                    )
                }
            )
            for _ in range(num_experts)
        )


def test_per_expert_layout_counts_the_same_and_frozen_experts_are_not_trainable():
    fused = tiny_moe("mixtral", experts=4, top_k=2)
    per_expert = tiny_moe("mixtral", experts=4, top_k=2)
    for layer in per_expert.model.layers:
        layer.mlp = PerExpertBlock(layer.mlp, top_k=2)
    assert MatmulParams.of(per_expert) == MatmulParams.of(fused)
    n, all_experts = moe_hand_count()
    for model in (fused, per_expert):
        for name, param in model.named_parameters():
            param.requires_grad = ".experts." not in name  # CoE stage 2: expert MLPs frozen
        active = 2 * 3 * HIDDEN * 24 * LAYERS
        assert MatmulParams.of(model) == MatmulParams(n, n - active)
    assert all_experts == 2 * active  # 4 experts stored, 2 used per token: the count is half the stored weights


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

    config = DistillConfig(
        student=tiny_dirs["student"],
        teacher=tiny_dirs["teacher"],
        task="arithmetic",
        output_dir=str(tmp_path / "run"),
        steps=2,
        batch_size=2,
        group_size=2,
        max_new_tokens=8,
        eval_size=4,
        quiet=True,
    )
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
    args = [
        "sft",
        "--model",
        tiny_dirs["student"],
        "--from-teacher",
        tiny_dirs["teacher"],
        "--task",
        "arithmetic",
        "--teacher-prompts",
        "6",
        "--teacher-samples",
        "2",
        "--max-new-tokens",
        "12",
        "--output-dir",
        str(out),
        "--batch-size",
        "4",
        "--group-size",
        "1",
        "--eval-size",
        "4",
        "--quiet",
    ]
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
    code = main(
        [
            "distill",
            "--student",
            tiny_dirs["student"],
            "--teacher",
            f"a={tiny_dirs['teacher']},b={other}",
            "--prompts",
            f"a={tmp_path / 'a.jsonl'},b={tmp_path / 'b.jsonl'}",
            "--output-dir",
            str(out),
            "--steps",
            "1",
            "--batch-size",
            "3",
            "--group-size",
            "2",
            "--max-new-tokens",
            "6",
            "--quiet",
        ]
    )
    assert code == 0
    record = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    big = MatmulParams.of(AutoModelForCausalLM.from_pretrained(tiny_dirs["teacher"])).total
    small = MatmulParams.of(AutoModelForCausalLM.from_pretrained(other)).total
    assert big > small
    # the three prompts (2 from a, 1 from b) x 2 samples: each scored by its own teacher's size
    assert 2 * small * record["tokens"] < record["flops_teacher_score"] < 2 * big * record["tokens"]
