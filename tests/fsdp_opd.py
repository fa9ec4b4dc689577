"""tests/distributed_opd.py under FSDP2 on CPU processes (gloo), run by tests/test_fsdp.py under torchrun.

accelerate 1.15 turns FSDP on only for accelerator process groups: ``AcceleratorState.__init__`` sets
``DistributedType.FSDP`` inside ``elif self.distributed_type in [MULTI_GPU, MULTI_MLU, ...]``, a list without
MULTI_CPU, so ``Accelerator(cpu=True, fsdp_plugin=...)`` quietly runs DDP. torch's ``fully_shard`` itself runs on
CPU with gloo. This script sets up accelerate's (shared) state as accelerate would on GPUs, the distributed type
FSDP and the FSDP2 plugin, and changes nothing else: the trainer's ``Accelerator`` then joins that state and
``prepare`` runs accelerate's own FSDP2 path (``fsdp2_prepare_model``: ``fully_shard`` per decoder layer and on
the root, the optimizer switched to the sharded parameters), its ``no_sync`` and DTensor-aware
``clip_grad_norm_``.

usage: fsdp_opd.py OUT STUDENT TEACHER PROMPTS [STEPS] [resume-check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from accelerate import Accelerator
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin


def use_fsdp2_on_cpu() -> None:
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        reshard_after_forward=True,
        state_dict_type="FULL_STATE_DICT",
    )
    state = Accelerator(cpu=True, fsdp_plugin=plugin).state
    if state.distributed_type != DistributedType.MULTI_CPU:
        raise SystemExit(f"expected accelerate to set up MULTI_CPU here, got {state.distributed_type}")
    # the two lines accelerate runs for GPU process groups (state.py, AcceleratorState.__init__)
    state.distributed_type, state.fsdp_plugin = DistributedType.FSDP, plugin
    PartialState().distributed_type = DistributedType.FSDP  # every later AcceleratorState copies it from here


def record_sharding(trainer, path: Path) -> None:
    """What this rank holds: the distributed type, FSDP units, and its share of each parameter's elements."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    params = list(trainer.policy.named_parameters())
    path.write_text(
        json.dumps(
            {
                "distributed_type": str(trainer.accelerator.distributed_type),
                "fsdp_units": [
                    name or "<root>" for name, m in trainer.policy.named_modules() if isinstance(m, FSDPModule)
                ],
                "dtensor_parameters": sum(isinstance(p, DTensor) for _, p in params),
                "parameters": len(params),
                "local_elements": sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for _, p in params),
                "full_elements": sum(p.numel() for _, p in params),
            }
        )
    )


if __name__ == "__main__":
    use_fsdp2_on_cpu()
    from tests.distributed_opd import run

    trainer, _ = run(*sys.argv[1:5], **({"steps": int(sys.argv[5])} if len(sys.argv) > 5 else {}))
    record_sharding(trainer, Path(sys.argv[1]) / f"sharding_rank{trainer.rank}.json")
