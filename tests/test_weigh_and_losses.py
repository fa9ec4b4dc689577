"""Advantages and losses against values computed by hand."""

import math

import torch

from mentor.update.losses import cross_entropy_loss, importance_sampling_loss
from mentor.update.optim import lr_multiplier
from mentor.weigh.advantages import distillation_advantages, group_baseline_advantages, reverse_kl


def test_distillation_advantage_is_negative_reverse_kl_on_completion_tokens():
    sampler = torch.tensor([[0.0, -1.0, -0.5, -2.0]])
    teacher = torch.tensor([[0.0, -3.0, -0.25, -1.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0]])  # prompt token, two completion tokens, padding
    assert torch.allclose(reverse_kl(sampler, teacher, mask), torch.tensor([[0.0, 2.0, -0.25, 0.0]]))
    adv = distillation_advantages(sampler, teacher, mask, coef=0.5)
    assert torch.allclose(adv, torch.tensor([[0.0, -1.0, 0.125, 0.0]]))


def test_discounted_distillation_advantage():
    sampler = torch.tensor([[-1.0, -1.0, -1.0]])
    teacher = torch.tensor([[-2.0, -1.0, -3.0]])
    mask = torch.ones(1, 3)
    # per-token penalties -1, 0, -2; with discount 0.5: [-1 + 0.5*0 + 0.25*-2, 0 + 0.5*-2, -2]
    adv = distillation_advantages(sampler, teacher, mask, coef=1.0, discount=0.5)
    assert torch.allclose(adv, torch.tensor([[-1.5, -1.0, -2.0]]))


def test_group_baseline_advantages():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 1, 1])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    adv = group_baseline_advantages(rewards, groups, mask)
    assert torch.allclose(adv, torch.tensor([[0.5, 0.5], [-0.5, 0.0], [0.0, 0.0], [0.0, 0.0]]))
    std = group_baseline_advantages(rewards, groups, mask, normalize_std=True)
    assert math.isclose(std[0, 0].item(), 0.5 / (math.sqrt(0.5) + 1e-6), rel_tol=1e-5)


def test_importance_sampling_loss_by_hand():
    logp = torch.tensor([[0.0, math.log(0.5), math.log(0.2)]])
    logq = torch.tensor([[0.0, math.log(0.25), math.log(0.2)]])
    adv = torch.tensor([[9.0, 2.0, -1.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    loss, ratio = importance_sampling_loss(logp, logq, adv, mask, num_tokens=2)
    # ratios 2 and 1: -(2*2 + 1*-1)/2 = -1.5 ; the masked first token (advantage 9) is ignored
    assert math.isclose(loss.item(), -1.5, rel_tol=1e-6)
    assert torch.allclose(ratio[0, 1:], torch.tensor([2.0, 1.0]))
    clipped, _ = importance_sampling_loss(logp, logq, adv, mask, num_tokens=2, clip_ratio=0.2)
    # PPO-clip: min(2*2, 1.2*2) = 2.4 ; min(-1, -1) = -1 -> -(2.4 - 1)/2
    assert math.isclose(clipped.item(), -0.7, rel_tol=1e-6)


def test_importance_sampling_gradient_is_advantage_weighted_score():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, _ = importance_sampling_loss(logp, logp.detach(), torch.tensor([[3.0, -1.0]]), torch.ones(1, 2), 2)
    loss.backward()
    # at ratio 1, d/dlogp of -(ratio*A)/N = -A/N
    assert torch.allclose(logp.grad, torch.tensor([[-1.5, 0.5]]))


def test_cross_entropy_loss_by_hand():
    logp = torch.tensor([[-5.0, -1.0, -3.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    assert math.isclose(cross_entropy_loss(logp, mask, 2).item(), 2.0)


def test_lr_schedules():
    assert lr_multiplier(0, 100, "constant", 10) == 0.1
    assert lr_multiplier(50, 100, "constant", 10) == 1.0
    assert math.isclose(lr_multiplier(10, 110, "linear", 10), 1.0)
    assert math.isclose(lr_multiplier(60, 110, "linear", 10), 0.5)
    assert math.isclose(lr_multiplier(60, 110, "cosine", 10), 0.5, abs_tol=1e-9)
    assert math.isclose(lr_multiplier(110, 110, "cosine", 10, min_lr_ratio=0.1), 0.1)
