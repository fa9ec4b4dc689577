"""FSDP2 through accelerate: 2 CPU processes (gloo) under torchrun match a 1-process run of the same batch.

accelerate turns FSDP on only for accelerator process groups (see tests/fsdp_opd.py for the line and how the
launcher sets its state as accelerate does on GPUs); torch's ``fully_shard`` runs on CPU, so the trainer's
FSDP2 path (sharded update, gathered checkpoints and final/, resume into shards, sampling from the sharded
model) runs for real here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.distributed_opd import run
from tests.helpers import free_port

SCRIPT = Path(__file__).with_name("fsdp_opd.py")


def _torchrun(out_dir: Path, tiny_dirs, prompts_file, steps: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SCRIPT.parent.parent))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(SCRIPT),
        str(out_dir),
        tiny_dirs["student"],
        tiny_dirs["teacher"],
        prompts_file,
        str(steps),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


def _weights_gap(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max((a[name] - b[name]).abs().max().item() for name in b)


def test_fsdp2_update_checkpoint_resume_and_final_match_one_process(tiny_dirs, prompts_file, tmp_path):
    single_dir, multi_dir = tmp_path / "single", tmp_path / "multi"
    for directory in (single_dir, multi_dir):
        directory.mkdir()
    _, single_history = run(str(single_dir), tiny_dirs["student"], tiny_dirs["teacher"], prompts_file)
    single = torch.load(single_dir / "weights_rank0_of_1.pt")

    # 2 steps (the checkpoint holds the gathered weights and Adam state), then the same run resumed to 3
    _torchrun(multi_dir, tiny_dirs, prompts_file, steps=2)
    assert _weights_gap(torch.load(multi_dir / "weights_rank0_of_2.pt"), single) > 1e-4  # one step short
    _torchrun(multi_dir, tiny_dirs, prompts_file, steps=3)
    for rank in (0, 1):  # really sharded: each rank holds half of every parameter, decoder layers are units
        sharding = json.loads((multi_dir / f"sharding_rank{rank}.json").read_text())
        assert sharding["distributed_type"] == "DistributedType.FSDP"
        assert sharding["dtensor_parameters"] == sharding["parameters"]
        assert sharding["local_elements"] * 2 == sharding["full_elements"]
        assert "model.model.layers.0" in sharding["fsdp_units"]

    records = [json.loads(line) for line in (multi_dir / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]  # written once, by rank 0; step 3 after the resume
    for multi, one in zip(records, [r for r in single_history if "loss" in r]):
        # the loss is normalised by the global token count, so it is the 1-process loss up to float noise
        for key in ("loss", "grad_norm", "ratio_mean", "completion_length"):
            assert multi[key] == pytest.approx(one[key], rel=1e-5, abs=1e-5), key
        assert multi["tokens"] == one["tokens"]
    gathered = torch.load(multi_dir / "weights_rank0_of_2.pt")  # the shards gathered onto rank 0 only
    assert not (multi_dir / "weights_rank1_of_2.pt").exists()
    # measured 1.6e-7; a resume without Adam's moments, or one step's gradient off, moves weights by ~1e-3
    assert _weights_gap(gathered, single) < 1e-5

    final = AutoModelForCausalLM.from_pretrained(multi_dir / "run" / "final").state_dict()
    assert _weights_gap(final, single) < 1e-5
    checkpoints = sorted(p.name for p in (multi_dir / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step_00000002", "step_00000003"]
