"""On-policy RL with a sequence-level reward: the student writes the tokens, a grader scores each answer.

    A_t = (r - mean_group(r)) [/ std_group(r)]   for every completion token   (GRPO with the std)
          - kl_coef * (log q(x_t) - log p_ref(x_t))                           (optional KL to a reference)

and the update is the importance-sampling policy gradient ``-pi/q * A`` shared with OPD (``--loss ppo``
clips the ratio). The KL penalty is the OPD advantage with the reference model in the teacher's seat:
RL and OPD differ only in who grades the tokens. A group whose samples all got the same reward has zero
advantage everywhere: it is dropped (and counted) so it does not dilute the per-token normalisation.
"""

from __future__ import annotations

import time

import torch

from mentor.data.prompts import EncodedExample
from mentor.rollout import RolloutBatch
from mentor.sample.base import Sampler, sample_groups
from mentor.score.base import Teacher, score_with_teacher
from mentor.tasks.graders import Grader
from mentor.update.logprobs import PolicyOutput
from mentor.update.losses import carries_signal, policy_gradient_loss
from mentor.weigh.advantages import distillation_advantages, group_baseline_advantages, reverse_kl


def constant_reward_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: the row's group has the same reward for every sample (no learning signal)."""
    constant = torch.zeros_like(group_ids, dtype=torch.bool)
    for gid in group_ids.unique():
        rows = group_ids == gid
        constant[rows] = bool((rewards[rows] == rewards[rows][0]).all())
    return constant


class ReinforcementLearning:
    """``clip_ratio`` > 0 clips the importance ratio (PPO, ``--clip-ratio``); ``tis_cap`` > 0 truncates the
    sampler/trainer importance ratio at that cap (``--tis-cap``)."""

    name = "rl"
    on_policy = True

    def __init__(
        self,
        sampler: Sampler,
        tokenizer,
        grader: Grader,
        *,
        group_size: int,
        temperature: float,
        normalize_std: bool = False,
        kl_coef: float = 0.0,
        reference: Teacher | None = None,
        drop_constant_groups: bool = True,
        clip_ratio: float = 0.0,
        tis_cap: float = 0.0,
    ):
        if kl_coef and reference is None:
            raise ValueError("a KL penalty needs a reference model")
        self.sampler, self.tokenizer, self.grader = sampler, tokenizer, grader
        self.group_size, self.temperature = group_size, temperature
        self.clip_ratio, self.tis_cap = clip_ratio, tis_cap
        self.normalize_std, self.kl_coef, self.reference = normalize_std, kl_coef, reference
        self.drop_constant_groups = drop_constant_groups

    def collect(self, examples: list[EncodedExample]) -> tuple[RolloutBatch, dict[str, float]]:
        t0 = time.perf_counter()
        batch, repeated = sample_groups(self.sampler, self.tokenizer, examples, self.group_size)
        sampled_tokens = float(batch.attention_mask.sum())
        t1 = time.perf_counter()
        batch.rewards = torch.tensor([float(self.grader(c, e.reference)) for c, e in zip(batch.completions, repeated)])
        metrics = {
            "reward": float(batch.rewards.mean()),
            "sampled_tokens": sampled_tokens,
            "completion_length": float(batch.loss_mask.sum(1).mean()),
            "truncated_fraction": float(batch.truncated.float().mean()),
        }
        constant = constant_reward_groups(batch.rewards, batch.group_ids)
        metrics["constant_reward_groups"] = float(constant[:: self.group_size].sum())
        # when every group is constant there is nothing to drop *to*: the rows stay, their reward advantage
        # is zero, and only the KL term (if any) moves the policy
        if self.drop_constant_groups and constant.any() and not constant.all():
            batch = batch.select(torch.nonzero(~constant).squeeze(1))
        mask = batch.loss_mask
        batch.advantages = group_baseline_advantages(batch.rewards, batch.group_ids, mask, self.normalize_std)
        if self.kl_coef:
            batch.teacher_logprobs = score_with_teacher(self.reference, batch)
            batch.advantages += distillation_advantages(
                batch.sampler_logprobs, batch.teacher_logprobs, mask, self.kl_coef
            )
            num_tokens = max(float(mask.sum()), 1.0)
            metrics["kl_to_reference"] = (
                float(reverse_kl(batch.sampler_logprobs, batch.teacher_logprobs, mask).sum()) / num_tokens
            )
            metrics["reference_tokens"] = float(batch.attention_mask.sum())
        metrics.update(time_sample=t1 - t0, time_score=time.perf_counter() - t1)
        return batch, metrics

    def forward_options(self, micro: RolloutBatch | None = None) -> dict:
        return {"temperature": self.temperature, "with_entropy": True}

    def carries_signal(self, batch: RolloutBatch) -> bool:
        return carries_signal(batch.advantages, batch.loss_mask)

    def loss(self, output: PolicyOutput, micro: RolloutBatch, num_tokens: int) -> tuple[torch.Tensor, dict]:
        return policy_gradient_loss(output.logprobs, micro, num_tokens, self.clip_ratio, self.tis_cap)
