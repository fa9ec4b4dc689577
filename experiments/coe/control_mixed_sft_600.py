"""Post-hoc control (not in the pre-written protocol): mixed SFT given CoE's total step count.

CoE-3E2A trains 3 x 100 expert steps and then 300 stage-2 steps (600 in all); the protocol's mixed SFT gets 300.
This runs mixed SFT for 600 steps on the same data, batch, lr schedule and seeds, into the full run's runs/
folder, and writes runs/mixed_sft_600.json (rows as in results.json). Run after `mentor bench coe`:

    python -m experiments.coe.control_mixed_sft_600   # from the repository root
"""

import json
from dataclasses import replace
from pathlib import Path

import torch

torch.set_num_threads(1)
from experiments.coe import run as coe
from mentor.coe.recipe import CoEConfig

scale = replace(coe.FULL, expert_steps=2 * coe.FULL.expert_steps)  # union_steps = 600
out = {}
for seed in coe.FULL.seeds:
    shared = CoEConfig(
        output_dir=f"experiments/coe/runs/seed{seed}/coe_shared",
        base=str(coe.ASSET),
        data="experiments/coe/runs/data.jsonl",
        labeler="field",
        categories=",".join(coe.DOMAIN_TASKS),
        seed=seed,
    )
    path = coe._mixed_sft(shared, Path(f"experiments/coe/runs/seed{seed}/mixed_sft_600"), scale)
    out[seed] = coe._evaluate_model("mixed SFT, 600 steps", path, coe.FULL)
Path("experiments/coe/runs/mixed_sft_600.json").write_text(json.dumps(out))
