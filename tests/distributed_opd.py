"""A few OPD steps through ``run_distill``, run by tests/test_distributed.py in one process or under torchrun.

Sampling is seeded per (step, prompt, copy), so the tokens do not depend on how the batch is sharded over
processes: a 2-process run and a 1-process run of the same global batch must then agree to float noise.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import torch

import mentor.recipes.distill as distill
from mentor.config import DistillConfig
from mentor.sample.base import SampledBatch


class ShardInvariantSampler:
    """Wraps a sampler; each completion's randomness depends only on (call, prompt ids, copy index)."""

    def __init__(self, inner, calls: int = 0):
        self.inner, self.calls = inner, calls  # a resumed run starts counting at its completed steps

    def sample(self, prompt_ids: list[list[int]]) -> SampledBatch:
        self.calls += 1
        out, copies = SampledBatch([], [], [], []), Counter()
        for prompt in prompt_ids:
            key = tuple(prompt)
            torch.manual_seed(hash((self.calls, key, copies[key])) % 2**31)  # int tuples hash the same everywhere
            copies[key] += 1
            one = self.inner.sample([prompt])
            for name in ("prompt_ids", "completion_ids", "completion_logprobs", "truncated"):
                getattr(out, name).extend(getattr(one, name))
        return out


def run(out_dir: str, student: str, teacher: str, prompts: str, steps: int = 3):
    name = "make_sampler" if hasattr(distill, "make_sampler") else "_sampler"  # the recipe's sampler factory
    original = getattr(distill, name)
    metrics = Path(out_dir) / "run" / "metrics.jsonl"
    done = len(metrics.read_text().splitlines()) if metrics.exists() else 0  # one sampler call per step
    setattr(distill, name, lambda *args, **kwargs: ShardInvariantSampler(original(*args, **kwargs), done))
    try:
        config = DistillConfig(
            student=student,
            teacher=teacher,
            prompts=prompts,
            output_dir=str(Path(out_dir) / "run"),
            steps=steps,
            batch_size=4,
            group_size=2,
            max_new_tokens=8,
            micro_batch_size=3,
            learning_rate=1e-3,
            save_every=steps,
            quiet=True,
            seed=0,
        )
        trainer, history = distill.run_distill(config)
    finally:
        setattr(distill, name, original)
    model = trainer.full_weights()[0] if trainer.fsdp2 else trainer.model  # FSDP2: gathered onto rank 0 only
    if model is not None:
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        torch.save(weights, Path(out_dir) / f"weights_rank{trainer.rank}_of_{trainer.world_size}.pt")
    return trainer, history


if __name__ == "__main__":
    run(*sys.argv[1:5])
