"""``sampled`` (the Thinking Machines recipe): ``log q(x_t) - log p(x_t)`` of the sampled token as a per-token
advantage, ``A_t = -kl_coef * (log q - log p)`` (discounted over later tokens with ``kl_discount``); any teacher."""

from __future__ import annotations

from mentor.rollout import RolloutBatch
from mentor.score.per_source import score_by_source
from mentor.weigh.advantages import distillation_advantages
from mentor.weigh.divergences.base import TEACHER_LOGPROBS, Divergence, teacher_metrics


class Sampled(Divergence):
    name = "sampled"
    needs = TEACHER_LOGPROBS
    in_forward = False

    def score(self, batch: RolloutBatch, sources: list[str]) -> dict[str, float]:
        batch.teacher_logprobs, metrics = score_by_source(self.teacher, batch, sources)
        batch.advantages = distillation_advantages(
            batch.sampler_logprobs,
            batch.teacher_logprobs,
            batch.loss_mask,
            self.options.kl_coef,
            self.options.kl_discount,
        )
        return metrics | teacher_metrics(batch)
