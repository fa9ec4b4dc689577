"""Truncated importance sampling: the sampler/trainer ratio capped at C, with the capped fraction logged."""

import math
from types import SimpleNamespace

import pytest
import torch

from mentor.update.losses import policy_gradient_loss


def _micro():
    trainer = torch.tensor([[0.0, -1.0, -2.0, -0.5, -3.0], [0.0, -0.2, -1.5, -0.7, 0.0]])
    # the sampler's log-probs, perturbed away from the trainer's (an inference engine's numerics)
    shift = torch.tensor([[0.0, -1.0, 0.05, 0.9, -0.1], [0.0, 0.3, -2.0, 0.0, 0.0]])
    loss_mask = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0, 0.0]])
    advantages = torch.tensor([[0.0, 1.0, -2.0, 0.5, 1.5], [0.0, -1.0, 3.0, 2.0, 0.0]]) * loss_mask
    micro = SimpleNamespace(sampler_logprobs=(trainer + shift) * loss_mask, advantages=advantages, loss_mask=loss_mask)
    return trainer, shift, micro


def test_the_ratio_is_capped_by_hand_and_the_capped_fraction_is_logged():
    trainer, shift, micro = _micro()
    cap = 2.0
    logprobs = (trainer * micro.loss_mask).requires_grad_(True)
    loss, metrics = policy_gradient_loss(logprobs, micro, num_tokens=7, tis_cap=cap)
    # ratios on the 7 loss tokens: e^1, e^-0.05, e^-0.9, e^0.1 | e^-0.3, e^2, e^0 -> e^1 and e^2 exceed 2
    weights = [
        min(math.exp(1.0), cap),
        math.exp(-0.05),
        math.exp(-0.9),
        math.exp(0.1),
        math.exp(-0.3),
        min(math.exp(2.0), cap),
        1.0,
    ]
    advantages = [1.0, -2.0, 0.5, 1.5, -1.0, 3.0, 2.0]
    assert float(loss) == pytest.approx(-sum(w * a for w, a in zip(weights, advantages)) / 7, rel=1e-6)
    assert metrics["tis_capped_fraction"] == pytest.approx(2 / 7)
    assert metrics["ratio_max"] == pytest.approx(math.exp(2.0), rel=1e-6)  # the logged ratio is uncapped

    # the gradient per token is -min(ratio, C) * A / num_tokens: a capped token still passes C * A
    loss.backward()
    expected = torch.zeros_like(logprobs)
    for (row, col), w, a in zip([(0, 1), (0, 2), (0, 3), (0, 4), (1, 1), (1, 2), (1, 3)], weights, advantages):
        expected[row, col] = -w * a / 7
    assert torch.allclose(logprobs.grad, expected, atol=1e-6)


def test_off_by_default_and_a_cap_above_every_ratio_changes_nothing():
    trainer, _, micro = _micro()
    plain, plain_metrics = policy_gradient_loss(trainer * micro.loss_mask, micro, 7)
    assert "tis_capped_fraction" not in plain_metrics
    loose, loose_metrics = policy_gradient_loss(trainer * micro.loss_mask, micro, 7, tis_cap=100.0)
    assert torch.equal(plain, loose) and loose_metrics["tis_capped_fraction"] == 0.0
    with pytest.raises(ValueError):
        policy_gradient_loss(trainer * micro.loss_mask, micro, 7, tis_cap=-1.0)


def test_with_ppo_the_capped_ratio_feeds_both_branches():
    trainer, _, micro = _micro()
    loss, metrics = policy_gradient_loss(trainer * micro.loss_mask, micro, 7, clip_ratio=0.2, tis_cap=2.0)
    ratios = [math.exp(1.0), math.exp(-0.05), math.exp(-0.9), math.exp(0.1), math.exp(-0.3), math.exp(2.0), 1.0]
    advantages = [1.0, -2.0, 0.5, 1.5, -1.0, 3.0, 2.0]
    total = 0.0
    for r, a in zip(ratios, advantages):
        w = min(r, 2.0)
        total += min(w * a, min(max(w, 0.8), 1.2) * a)
    assert float(loss) == pytest.approx(-total / 7, rel=1e-6) and metrics["tis_capped_fraction"] == pytest.approx(2 / 7)


def test_rl_passes_its_cap_to_the_loss():
    from mentor.algorithms.rl import ReinforcementLearning
    from mentor.update.logprobs import PolicyOutput

    trainer, _, micro = _micro()
    algorithm = ReinforcementLearning(None, None, lambda c, r: 0.0, group_size=2, temperature=1.0, tis_cap=2.0)
    loss, metrics = algorithm.loss(PolicyOutput(trainer * micro.loss_mask, None, None), micro, 7)
    assert metrics["tis_capped_fraction"] == pytest.approx(2 / 7)
    default = ReinforcementLearning(None, None, lambda c, r: 0.0, group_size=2, temperature=1.0)
    assert "tis_capped_fraction" not in default.loss(PolicyOutput(trainer * micro.loss_mask, None, None), micro, 7)[1]
