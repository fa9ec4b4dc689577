"""AdamW and the learning-rate schedule (constant / linear / cosine, each with linear warmup)."""

from __future__ import annotations

import math

import torch

SCHEDULES = ("constant", "linear", "cosine")


def make_optimizer(
    params, lr: float, betas: tuple[float, float], weight_decay: float, eps: float = 1e-8
) -> torch.optim.AdamW:
    params = [p for p in params if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps)


AUTO_WARMUP = -1  # the default warmup_steps: resolved by ``warmup_length``
MAX_AUTO_WARMUP = 10


def warmup_length(warmup_steps: int, total_steps: int) -> int:
    """Optimizer steps of linear warmup: ``warmup_steps``, or for ``AUTO_WARMUP`` min(10, total_steps // 10).

    A fresh AdamW's first step moves every weight by about the learning rate whatever the gradient's size
    (its moments start at that very gradient), so a short ramp is the default; runs of under 20 steps get none.
    """
    return min(MAX_AUTO_WARMUP, total_steps // 10) if warmup_steps == AUTO_WARMUP else warmup_steps


def lr_multiplier(step: int, total_steps: int, schedule: str, warmup_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Factor applied to the base LR at optimizer step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        decay = 1.0 - progress
    elif schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def make_scheduler(
    optimizer, total_steps: int, schedule: str, warmup_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule of a fresh optimizer; a resumed run loads its state (``last_epoch``), so it goes on where it
    stopped instead of warming up again."""
    warmup = warmup_length(warmup_steps, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, total_steps, schedule, warmup, min_lr_ratio)
    )
