"""Which parameters train in each CoE stage (the trainer's optimizer takes those with ``requires_grad``).

Stage 1 (experts): only the FFN/MLP weights of every block, plus, if given, the embedding rows of newly
added special tokens (a gradient mask keeps every other row fixed; with weight decay 0 AdamW leaves a
parameter with zero gradient unchanged).
Stage 2 (expert utilisation): ``non-ffn`` trains everything except the expert MLPs (attention, norms,
embeddings, LM head, routers: the CoE default), ``full`` trains everything, ``router`` only the routers.
"""

from __future__ import annotations

import torch
from torch import nn

from mentor.errors import MentorError

STAGE2_VARIANTS = ("non-ffn", "full", "router")


def _is_expert_mlp(name: str) -> bool:
    return ".mlp.experts." in name


def _is_router(name: str) -> bool:
    return ".mlp.gate." in name


def freeze_for_expert_training(model: nn.Module, trainable_token_ids: list[int] | None = None) -> None:
    for name, param in model.named_parameters():
        param.requires_grad = ".mlp." in name
    if trainable_token_ids:
        embedding = model.get_input_embeddings().weight
        mask = torch.zeros(embedding.shape[0], 1, dtype=embedding.dtype)
        mask[trainable_token_ids] = 1.0
        embedding.requires_grad = True
        embedding.register_hook(lambda grad: grad * mask.to(grad.device))


def freeze_for_stage2(model: nn.Module, variant: str = "non-ffn") -> None:
    if variant not in STAGE2_VARIANTS:
        raise MentorError(f"--train {variant!r} is unknown: use {', '.join(STAGE2_VARIANTS)}")
    for name, param in model.named_parameters():
        if variant == "full":
            param.requires_grad = True
        elif variant == "router":
            param.requires_grad = _is_router(name)
        else:
            param.requires_grad = not _is_expert_mlp(name)
