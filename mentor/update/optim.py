"""AdamW and the learning-rate schedule (constant / linear / cosine, each with linear warmup)."""

from __future__ import annotations

import math

import torch

SCHEDULES = ("constant", "linear", "cosine")


def make_optimizer(params, lr: float, betas: tuple[float, float], weight_decay: float,
                   eps: float = 1e-8) -> torch.optim.AdamW:
    params = [p for p in params if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps)


def lr_multiplier(step: int, total_steps: int, schedule: str, warmup_steps: int,
                  min_lr_ratio: float = 0.0) -> float:
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


def make_scheduler(optimizer, total_steps: int, schedule: str, warmup_steps: int,
                   min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, total_steps, schedule, warmup_steps, min_lr_ratio))
