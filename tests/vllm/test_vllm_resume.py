"""A run that samples with vLLM survives a kill: resumed, it ends with the uninterrupted run's weights and metrics.

Each request's seed comes from torch's generator, which the checkpoint restores; the engine restarts empty."""

from __future__ import annotations

from tests.helpers import assert_same_run, kill_when_paused, start_driven, succeeds


def _command(dirs: dict, out) -> list[str]:
    return [
        "distill",
        "--student",
        dirs["student"],
        "--teacher",
        dirs["teacher"],
        "--task",
        "arithmetic",
        "--sampler",
        "vllm",
        "--vllm-enforce-eager",
        "--group-size",
        "2",
        "--output-dir",
        str(out),
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--save-every",
        "2",
        "--eval-size",
        "4",
        "--eval-every",
        "2",
        "--max-new-tokens",
        "8",
        "--learning-rate",
        "1e-3",
        "--seed",
        "3",
        "--warmup-steps",
        "3",
        "--quiet",
    ]


def test_a_killed_vllm_run_resumes_to_the_same_weights_and_metrics(engine_dirs, tmp_path):
    reference, resumed, flag = tmp_path / "reference", tmp_path / "resumed", tmp_path / "paused"
    succeeds(start_driven(_command(engine_dirs, reference)))
    kill_when_paused(start_driven(_command(engine_dirs, resumed), PAUSE_FLAG=flag, PAUSE_BEFORE_STEP=3), flag)
    succeeds(start_driven([*_command(engine_dirs, resumed), "--resume"]))
    assert_same_run(resumed, reference)
