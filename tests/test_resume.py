"""Runs survive SIGKILL (between steps and in the middle of a checkpoint write) and SIGTERM: resumed runs
end with the same weights and metrics, bit for bit, as an uninterrupted run with the same seed.

Each run is a real ``mentor`` process. A small driver wraps the CLI so the test can stop it at an exact
point: before a given step, or inside the write of a given checkpoint (after the weights, before the
trainer state), and then kill it there.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mentor.train.run_dir import RunDirectory, load_trainer_state
from tests.helpers import (
    assert_same_run,
    finish,
    kill_when_paused,
    run_metrics,
    start_driven,
    succeeds,
    wait_until_paused,
)


def _assert_checkpoints_sound(out: Path) -> None:
    """Every visible checkpoint is complete and loadable; only a temporary directory may be partial."""
    run = RunDirectory(out)
    for checkpoint in run.checkpoints.glob("step_*"):
        assert (checkpoint / "COMPLETE").exists()
        assert load_trainer_state(checkpoint)["step"] == int(checkpoint.name.split("_")[1])
        assert load_file(checkpoint / "model" / "model.safetensors")


def _command(kind: str, dirs: dict, out: Path) -> list[str]:
    # as small as the kill points allow: each run is a fresh process, so every token here is paid ~8 times
    common = [
        "--output-dir",
        str(out),
        "--steps",
        "6",
        "--batch-size",
        "2",
        "--save-every",
        "2",
        "--keep-checkpoints",
        "2",
        "--eval-size",
        "2",
        "--eval-every",
        "3",
        "--max-new-tokens",
        "6",
        "--learning-rate",
        "1e-3",
        "--seed",
        "3",
        "--quiet",
        "--warmup-steps",
        "4",
    ]  # kills land inside the warmup: a resumed run continues it, never restarts it
    if kind == "distill":
        return [
            "distill",
            "--student",
            dirs["student"],
            "--teacher",
            dirs["teacher"],
            "--task",
            "arithmetic",
            "--group-size",
            "2",
            *common,
        ]
    return [
        "sft",
        "--model",
        dirs["student"],
        "--task",
        "arithmetic",
        "--train-size",
        "16",
        "--group-size",
        "1",
        *common,
    ]


def test_opd_survives_kills_and_sigterm_bitwise(tiny_dirs, tmp_path):
    reference, out, flag = tmp_path / "reference", tmp_path / "run", tmp_path / "paused"
    clean = start_driven(_command("distill", tiny_dirs, reference))

    # 1. SIGKILL after step 3 was logged, between checkpoints (step_2 on disk): metrics past 2 are redone
    run = start_driven(_command("distill", tiny_dirs, out), PAUSE_FLAG=flag, PAUSE_BEFORE_STEP=3)
    kill_when_paused(run, flag)
    assert RunDirectory(out).latest_checkpoint().name == "step_00000002"
    assert max(r["step"] for r in run_metrics(out)) == 3

    # 2. SIGKILL inside the write of checkpoint 4: weights written, trainer state not; never picked up
    run = start_driven(_command("distill", tiny_dirs, out), PAUSE_FLAG=flag, PAUSE_IN_SAVE_OF_STEP=4)
    kill_when_paused(run, flag)
    partial = out / "checkpoints" / ".tmp-step_00000004"
    assert (partial / "model").exists() and not (partial / "COMPLETE").exists()
    assert RunDirectory(out).latest_checkpoint().name == "step_00000002"
    _assert_checkpoints_sound(out)

    # 3. SIGTERM while step 5 runs: the step finishes, a checkpoint is saved, the process exits 128+15
    run = start_driven(_command("distill", tiny_dirs, out), PAUSE_FLAG=flag, PAUSE_BEFORE_STEP=4, PAUSE_SECONDS=1.5)
    wait_until_paused(run, flag)
    run.send_signal(signal.SIGTERM)
    code, err = finish(run)
    assert code == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM at step 5/6" in err and "Traceback" not in err
    assert RunDirectory(out).latest_checkpoint().name == "step_00000005"
    assert not partial.exists()  # the torn checkpoint was cleared when the run resumed
    assert not (out / "final").exists()  # nothing that looks like a finished model

    # 4. the explicit --resume runs it to the end
    succeeds(start_driven([*_command("distill", tiny_dirs, out), "--resume"]))
    succeeds(clean)
    assert_same_run(out, reference)
    _assert_checkpoints_sound(out)
    assert len(list((out / "checkpoints").iterdir())) == 2  # keep_checkpoints


def test_sft_survives_a_kill_during_a_checkpoint_write_bitwise(tiny_dirs, tmp_path):
    reference, out, flag = tmp_path / "reference", tmp_path / "run", tmp_path / "paused"
    clean = start_driven(_command("sft", tiny_dirs, reference))
    run = start_driven(_command("sft", tiny_dirs, out), PAUSE_FLAG=flag, PAUSE_IN_SAVE_OF_STEP=6)
    kill_when_paused(run, flag)
    assert RunDirectory(out).latest_checkpoint().name == "step_00000004"
    succeeds(start_driven(_command("sft", tiny_dirs, out)))  # the same command again resumes
    succeeds(clean)
    assert_same_run(out, reference)


def test_resume_without_a_checkpoint_is_one_line_and_writes_nothing(tiny_dirs, tmp_path, capsys):
    from mentor.cli import main

    out = tmp_path / "never-ran"
    assert main([*_command("sft", tiny_dirs, out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mentor: error: --resume:") and "no checkpoint" in err and "\n" not in err
    assert not out.exists()


# --- the weights of a checkpoint, for architectures whose save_pretrained rewrites keys --------------------
# transformers 5 saves fused MoE experts per expert (Qwen3-MoE, Mixtral) and renames GPT-NeoX's lm_head; a
# checkpoint must hold the module's own state_dict so that resuming restores it exactly.
KEY_REWRITING_ARCHS = {
    "qwen3_moe": dict(
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=32,
        moe_intermediate_size=16,
        num_experts=4,
        num_experts_per_tok=2,
        tie_word_embeddings=True,
    ),
    "mixtral": dict(num_key_value_heads=2, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2),
    "gpt_neox": dict(intermediate_size=32),
}


def _tiny(arch: str, seed: int, lora: bool = False, adapter_seed: int = 0):
    from transformers import AutoConfig

    from mentor.models.loading import apply_lora
    from mentor.models.tiny import build_tiny_model

    config = AutoConfig.for_model(
        arch,
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=32,
        **KEY_REWRITING_ARCHS[arch],
    )
    model = build_tiny_model(config, seed=seed)
    if lora:
        targets = ["query_key_value"] if arch == "gpt_neox" else ["q_proj", "v_proj"]
        torch.manual_seed(adapter_seed)
        model = apply_lora(model, rank=2, alpha=4, target_modules=targets)
        for parameter in model.parameters():  # LoRA's B starts at zero: make every tensor distinct
            if parameter.requires_grad:
                parameter.data.normal_()
    return model


def _save_and_resume(model, fresh, tmp_path: Path):
    from mentor.train.trainer import _load_weights

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    checkpoint = RunDirectory(tmp_path).save_checkpoint(1, model, optimizer, scheduler, {}, keep=2)
    _load_weights(fresh, checkpoint / "model")
    return checkpoint


@pytest.mark.parametrize("arch", sorted(KEY_REWRITING_ARCHS))
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_checkpoints_of_moe_and_gpt_neox_resume_bitwise(arch, lora, tmp_path):
    # a LoRA run resumes on the base model it started from: only the adapter comes from the checkpoint
    other = dict(seed=1, adapter_seed=2) if lora else dict(seed=2)
    model, fresh = _tiny(arch, seed=1, lora=lora, adapter_seed=1), _tiny(arch, lora=lora, **other)
    _save_and_resume(model, fresh, tmp_path)
    expected, restored, before = model.state_dict(), fresh.state_dict(), _tiny(arch, lora=lora, **other).state_dict()
    assert restored.keys() == expected.keys()
    assert all(torch.equal(restored[k], expected[k]) for k in expected)
    assert any(not torch.equal(before[k], expected[k]) for k in expected)  # the load did change the weights
    if getattr(fresh.config, "tie_word_embeddings", False):  # still one tensor, not two copies
        assert fresh.get_output_embeddings().weight.data_ptr() == fresh.get_input_embeddings().weight.data_ptr()


@pytest.mark.parametrize(
    "saved, resumed, why",
    [
        ("mixtral", "qwen3_moe", "size mismatch for model.layers"),
        ("gpt_neox", "mixtral", r"\d+ tensors missing, \d+ unexpected"),
    ],
)
def test_a_checkpoint_of_another_model_is_one_clear_line(saved, resumed, why, tmp_path):
    from mentor.errors import MentorError

    with pytest.raises(MentorError, match=rf"^checkpoint .* does not fit this model \({why}.*\): resume with") as info:
        _save_and_resume(_tiny(saved, seed=1), _tiny(resumed, seed=1), tmp_path)
    assert "\n" not in str(info.value)
