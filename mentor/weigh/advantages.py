"""Per-token advantages. Every method is a sum of these terms (tinker-cookbook's additive advantage)."""

from __future__ import annotations

import torch


def discounted_cumsum(values: torch.Tensor, mask: torch.Tensor, discount: float) -> torch.Tensor:
    """``out_t = sum_{k>=t} discount^(k-t) * values_k`` over masked positions of each row."""
    values = values * mask
    if discount == 0.0:
        return values
    out = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in range(values.shape[1] - 1, -1, -1):
        running = values[:, t] + discount * running * mask[:, t]
        out[:, t] = running
    return out * mask


def reverse_kl(sampler_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Per-token single-sample reverse-KL estimate ``log q(x_t) - log p_teacher(x_t)`` on masked tokens."""
    return (sampler_logprobs - teacher_logprobs) * loss_mask


def distillation_advantages(
    sampler_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    loss_mask: torch.Tensor,
    coef: float = 1.0,
    discount: float = 0.0,
) -> torch.Tensor:
    """OPD: ``A_t = -coef * (log q(x_t) - log p_teacher(x_t))``, optionally discounted over the future."""
    penalty = -coef * reverse_kl(sampler_logprobs, teacher_logprobs, loss_mask)
    return discounted_cumsum(penalty, loss_mask, discount)


def group_baseline_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    loss_mask: torch.Tensor,
    normalize_std: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """RL: sequence reward minus the mean reward of its group, broadcast to every completion token."""
    centred = torch.zeros_like(rewards, dtype=torch.float32)
    for gid in group_ids.unique():
        rows = group_ids == gid
        group = rewards[rows].float()
        value = group - group.mean()
        if normalize_std and group.numel() > 1:
            value = value / (group.std() + eps)
        centred[rows] = value
    return centred.unsqueeze(1) * loss_mask
