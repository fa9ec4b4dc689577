"""FSDP2 (``fully_shard`` through accelerate): what the trainer does differently when parameters are sharded.

Under FSDP2 every parameter is a DTensor shard that is gathered only inside an FSDP unit's forward. The update
(forward, backward, ``no_sync``, ``clip_grad_norm_``) goes through accelerate unchanged; three places see the
model outside the wrapped forward and need the helpers below:

- sampling and evaluation call transformers ``generate`` on the inner model, not the wrapped forward;
- checkpoints and ``final/`` need full tensors, gathered by every rank and written by the main process;
- resuming puts full tensors back into the shards.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

from mentor.errors import MentorError
from mentor.models.logprobs import causal_lm_of


def check_fsdp_request(accelerator) -> None:
    """One line when an accelerate config asked for FSDP but accelerate set up something else.

    accelerate (1.15, ``AcceleratorState.__init__``) turns on FSDP only when the process group runs on an
    accelerator (MULTI_GPU/XPU/NPU/...); with ``cpu=True`` it sets MULTI_CPU and drops the FSDP plugin without a
    word, so an FSDP config on a CPU machine would quietly train with DDP.
    """
    from accelerate.utils import DistributedType

    requested = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if requested and accelerator.num_processes > 1 and accelerator.distributed_type != DistributedType.FSDP:
        raise MentorError(
            f"the accelerate config asks for FSDP, but accelerate set up "
            f"{accelerator.distributed_type.value} (it runs FSDP on GPUs/accelerators only): on CPU "
            "launch with examples/accelerate/ddp.yaml"
        )


def prepare_for_sampling(policy: nn.Module, model: nn.Module, device: torch.device) -> None:
    """Make the sharded model usable by ``generate``; call once, right after ``accelerator.prepare``.

    FSDP2 takes as root the first FSDP module to run forward. Sampling calls the inner model, so without a first
    forward through the wrapper a decoder layer would become root and the training forward would then fail.
    ``_is_fsdp_managed_module`` is the attribute transformers' own FSDP2 integration sets: ``generate`` then
    runs with ``synced_gpus`` so a rank whose sequences all ended keeps joining the others' all-gathers.
    """
    causal_lm_of(model)._is_fsdp_managed_module = True
    was_training = policy.training
    policy.eval()
    with torch.no_grad():
        ids = torch.zeros((1, 2), dtype=torch.long, device=device)
        policy(ids, torch.ones_like(ids))
    policy.reshard()  # the root keeps its parameters gathered after a forward; a state-dict load needs shards
    policy.train(was_training)


@contextlib.contextmanager
def root_gathered(policy: nn.Module, enabled: bool) -> Iterator[None]:
    """Gather the root's own parameters (those no child unit owns) while code calls the inner model directly.

    Decoder layers are FSDP units whose hooks gather them in any forward; the root's parameters (embeddings,
    final norm, LM head) are gathered only by the wrapper's forward, which ``generate`` does not go through.
    """
    if not enabled:
        yield
        return
    policy.unshard()
    try:
        yield
    finally:
        policy.reshard()


def _full_options(**extra):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **extra)


def gather_full_state(model: nn.Module, policy: nn.Module, optimizer) -> tuple[dict, dict]:
    """Full model and optimizer state dicts on the main process (empty elsewhere). Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    weights = get_model_state_dict(model, options=_full_options(cpu_offload=True))
    optimizer_state = get_optimizer_state_dict(policy, optimizer, options=_full_options(cpu_offload=True))
    return weights, optimizer_state


def plain_model(model: nn.Module, weights: dict) -> nn.Module:
    """An unsharded copy of ``model`` holding ``weights`` (no copy of the tensors: built on the meta device)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(model.config)
    plain.load_state_dict(weights, assign=True)
    plain.tie_weights()  # assign=True replaced the tied tensor of one side
    plain.generation_config = model.generation_config
    return plain


def load_full_state(model: nn.Module, policy: nn.Module, optimizer, weights: dict, optimizer_state: dict) -> None:
    """Put full tensors (read by every rank) back into the shards."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    # through the wrapper (the FSDP root): set_model_state_dict shards only the tensors of FSDP modules it is
    # given, and the root owns the embeddings, final norm and head. strict=False: a checkpoint stores tied
    # tensors once (lm_head.weight is embed_tokens.weight)
    prefix = next(name for name, module in policy.named_modules() if module is model)
    set_model_state_dict(policy, {f"{prefix}.{k}": v for k, v in weights.items()}, options=_full_options(strict=False))
    set_optimizer_state_dict(policy, optimizer, optimizer_state, options=_full_options())
