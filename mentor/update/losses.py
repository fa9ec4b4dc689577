"""Losses: how the per-token weights of the weigh stage become a gradient.

All losses are token sums divided by ``num_tokens`` (the loss tokens of the whole optimizer step), so
micro-batches can be accumulated and long and short sequences weigh each token equally.
"""

from __future__ import annotations

import torch

from mentor.update.metrics import Metric

LOSSES = ("importance_sampling", "ppo", "cross_entropy")


def importance_sampling_loss(
    logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    num_tokens: int,
    clip_ratio: float | None = None,
    tis_cap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``-sum(mask * pi/q * A) / num_tokens``; with ``clip_ratio`` the PPO-clip surrogate instead.

    ``tis_cap`` C > 0 is truncated importance sampling (verl's and slime's fix for an inference engine's
    log-probs differing from the trainer's): each token's weight is ``min(pi/q, C)``, the cap applied as a
    detached factor ``min(1, C / (pi/q))``, so a capped token still passes ``C * A * grad log pi``. With
    ``clip_ratio`` the PPO surrogate uses the capped ratio in both branches.

    Returns the loss and the (uncapped) importance ratio ``pi/q`` (for metrics).
    """
    ratio = torch.exp(logprobs - sampler_logprobs)
    weight = ratio
    if tis_cap is not None:
        weight = ratio * (torch.clamp(ratio.detach(), max=tis_cap) / ratio.detach())
    surrogate = weight * advantages
    if clip_ratio is not None:
        clipped = torch.clamp(weight, 1.0 - clip_ratio, 1.0 + clip_ratio) * advantages
        surrogate = torch.minimum(surrogate, clipped)
    loss = -(surrogate * loss_mask).sum() / max(num_tokens, 1)
    return loss, ratio.detach()


def cross_entropy_loss(
    logprobs: torch.Tensor, loss_mask: torch.Tensor, num_tokens: int, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Negative log-likelihood of the target tokens (SFT, off-policy distillation)."""
    per_token = -logprobs if weights is None else -logprobs * weights
    return (per_token * loss_mask).sum() / max(num_tokens, 1)


def policy_gradient_loss(
    logprobs: torch.Tensor, micro, num_tokens: int, clip_ratio: float = 0.0, tis_cap: float = 0.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """RL's and OPD's loss on a micro-batch (a ``RolloutBatch``): ``importance_sampling_loss`` of its
    advantages, PPO-clipped whenever ``clip_ratio`` > 0, the ratio truncated at ``tis_cap`` whenever it is > 0,
    and the importance-ratio metrics (``ratio_mean`` is this micro-batch's share of the step's per-token mean,
    ``ratio_max`` its maximum, a ``Metric`` reduced by its maximum, and with ``tis_cap`` ``tis_capped_fraction``
    its share of the step's fraction of loss tokens whose ratio exceeded the cap)."""
    if tis_cap < 0:
        raise ValueError(f"tis_cap must be > 0 to truncate, or 0 for off (got {tis_cap})")
    loss, ratio = importance_sampling_loss(
        logprobs,
        micro.sampler_logprobs,
        micro.advantages,
        micro.loss_mask,
        num_tokens,
        clip_ratio=clip_ratio or None,
        tis_cap=tis_cap or None,
    )
    masked = ratio * micro.loss_mask
    metrics = {
        "ratio_max": Metric(float(masked.max()), reduce="max"),
        "ratio_mean": float(masked.sum()) / max(num_tokens, 1),
    }
    if tis_cap:
        capped = ((ratio > tis_cap) & (micro.loss_mask > 0)).sum()
        metrics["tis_capped_fraction"] = float(capped) / max(num_tokens, 1)
    return loss, metrics


def carries_signal(advantages: torch.Tensor, loss_mask: torch.Tensor) -> bool:
    """Whether any loss token has a non-zero advantage (weight): without one the gradient is zero, and an
    Adam step would still move the weights through its moments."""
    return bool(((advantages != 0) & (loss_mask > 0)).any())
