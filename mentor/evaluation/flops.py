"""Compute accounting: FLOPs spent by teacher and student on sampling, scoring and training.

The standard estimate (Kaplan et al. 2020): a forward pass costs ``2 * N`` FLOPs per token and a backward
pass ``4 * N``, where N counts the parameters that take part in a token's matrix multiplies. Here N is the
weights of every ``nn.Linear`` and transformers ``Conv1D`` (GPT-2's transposed linear layers): attention,
MLP and the output head (its matmul runs whether or not it is tied to the embedding); embedding lookups and
norms are free. In a mixture of experts each token runs through ``top_k`` of the ``E`` routed experts, so
the experts count ``top_k / E`` of their weights, whether they are stored per expert (an ``nn.ModuleList``
of MLPs, transformers 4) or fused into ``[E, out, in]`` tensors (transformers 5); the router (gate) is a
matmul of its own and counts in full, as do shared experts. The attention score term
(``~2 * layers * context * width``) is left out, as in the paper's accounting; it is small at the sequence
lengths used here.

LoRA: the forward runs the frozen base and the adapters (``2 * (N_base + N_lora)``). The backward still
propagates activation gradients through every layer (``2 * N_total``) but computes weight gradients only
for the adapters (``2 * N_trainable``), so a LoRA backward costs ``2 * N_total + 2 * N_trainable``, not
``4 * N_total``.

A run adds these up in its compute ledger (``mentor/train/ledger.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from torch import nn


@dataclass(frozen=True)
class MatmulParams:
    total: int  # weights in matrix multiplies (frozen and trainable)
    trainable: int  # of those, the ones that get weight gradients

    @classmethod
    def of(cls, model: nn.Module) -> MatmulParams:
        """Weights one token meets in matrix multiplies: linear layers, the active share of MoE experts, routers."""
        share = _token_share(model)
        total = trainable = Fraction(0)
        seen: set[int] = set()
        for module in model.modules():
            fraction = share.get(id(module))
            if fraction is not None:  # an MoE expert or router: all of its own tensors are matmul weights
                params = list(module.parameters(recurse=False))
            elif _is_linear(module):
                params = [p for p in (module.weight, module.bias) if p is not None]
                fraction = Fraction(1)
            else:
                continue
            for p in params:
                total += p.numel() * fraction  # a tied head still costs a matmul, even if its tensor was seen
                if p.requires_grad and id(p) not in seen:
                    trainable += p.numel() * fraction
                seen.add(id(p))
        return cls(round(total), round(trainable))


def _is_linear(module: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (nn.Linear, Conv1D))


def _token_share(model: nn.Module) -> dict[int, Fraction]:
    """``id(module) -> share of its weights each token uses`` for every module of an MoE block.

    An MoE block is a module with an ``experts`` child (Mixtral, Qwen2/3-MoE, OLMoE, gpt-oss, DeepSeek, ...):
    everything under ``experts`` gets ``top_k / E``; a router child that is not a linear layer (transformers
    5's ``TopKRouter`` holds a bare ``[E, hidden]`` weight) gets 1. Linear children (a transformers 4
    ``gate``, shared experts and their gates) are counted as linear layers anyway.
    """
    config = getattr(model, "config", None)
    share: dict[int, Fraction] = {}
    for block in model.modules():
        experts = getattr(block, "experts", None)
        if not isinstance(experts, nn.Module):
            continue
        num_experts = _num_experts(experts)
        top_k = _top_k(block, config)
        if not num_experts or not top_k:
            continue  # not a routed block after all (or one we cannot read): count it as plain layers
        for module in experts.modules():
            share[id(module)] = Fraction(min(top_k, num_experts), num_experts)
        for name, child in block.named_children():
            if name != "experts" and not _is_linear(child) and _is_router(child, num_experts):
                share[id(child)] = Fraction(1)
    return share


def _num_experts(experts: nn.Module) -> int:
    if isinstance(experts, nn.ModuleList):
        return len(experts)
    count = getattr(experts, "num_experts", None)
    if isinstance(count, int):
        return count
    fused = [p for p in experts.parameters() if p.dim() >= 3]  # [E, out, in]
    return fused[0].shape[0] if fused else 0


def _top_k(block: nn.Module, config) -> int:
    routers = [block] + [getattr(block, name) for name in ("gate", "router") if hasattr(block, name)]
    for owner in routers:
        for attr in ("top_k", "num_experts_per_tok"):
            value = getattr(owner, attr, None)
            if isinstance(value, int) and value > 0:
                return value
    value = getattr(config, "num_experts_per_tok", None)
    return value if isinstance(value, int) else 0


def _is_router(module: nn.Module, num_experts: int) -> bool:
    """A bare-weight router: its own ``weight`` maps hidden states to one logit per expert."""
    weight = getattr(module, "weight", None)
    return isinstance(weight, nn.Parameter) and weight.dim() == 2 and num_experts in weight.shape


def forward_flops(params: MatmulParams | int, tokens: int) -> float:
    n = params.total if isinstance(params, MatmulParams) else params
    return 2.0 * n * tokens


def backward_flops(params: MatmulParams, tokens: int) -> float:
    """Activation gradients through every layer plus weight gradients for the trainable ones."""
    return 2.0 * (params.total + params.trainable) * tokens


def training_flops(params: MatmulParams, tokens: int) -> float:
    return forward_flops(params, tokens) + backward_flops(params, tokens)
