"""What an OPD divergence is: what it needs from the teacher, its scoring step, its in-forward term, its loss.

A divergence turns the teacher's grades of the student's own samples into the student's training signal, one of
two ways: per-token advantages filled in before the update (``sampled``), or a per-position term the policy
forward computes from the student's hidden states, added to the loss (``full``, ``top_k``, ``jsd``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from mentor.errors import MentorError
from mentor.rollout import RolloutBatch
from mentor.update.logprobs import HiddenTerm, PolicyOutput
from mentor.weigh.advantages import reverse_kl

# what a divergence needs from the teacher (``Divergence.needs``); ``mentor.config`` reads it to refuse a teacher
# spec that cannot give it before anything loads, ``Divergence.check_teacher`` on the teacher object itself
TEACHER_LOGPROBS = "logprobs"  # the sampled tokens' log-probs: any teacher (in-process, a server, one per data set)
TEACHER_TOP_K = "top_k"  # its top-k log-probs: one teacher that declares ``supports_top_k`` (in-process or a server)
TEACHER_MODEL = "model"  # its whole distribution: one in-process teacher, run in the update next to the student


@dataclass(frozen=True)
class DivergenceOptions:
    """The options every divergence receives (each reads its own)."""

    kl_coef: float = 1.0
    kl_discount: float = 0.0
    kl_top_k: int = 0
    jsd_beta: float = 0.5

    def __post_init__(self):
        if not 0 <= self.jsd_beta <= 1:
            raise MentorError(f"jsd_beta must lie in [0, 1] (got {self.jsd_beta})")


class Divergence:
    """One ``--divergence``. Subclasses set ``name`` and ``needs`` and override what differs:

    - ``check_teacher``: refuse a teacher that cannot give what ``needs`` says (one line);
    - ``score(batch, sources)``: before the update, fill ``batch``'s teacher fields and ``batch.advantages``,
      return the metrics;
    - ``hidden_term(micro)``: the per-position term the policy forward computes (None: none);
    - ``add_term``: the loss with ``kl_coef`` times that term, logged as ``term_metric``.
    """

    name: ClassVar[str]
    needs: ClassVar[str]
    in_forward: ClassVar[bool] = True  # a per-position loss computed in the policy forward (no advantages of its own)
    term_metric: ClassVar[str] = "full_reverse_kl"

    def __init__(self, teacher, options: DivergenceOptions):
        self.teacher, self.options = teacher, options
        self.check_teacher()

    def check_teacher(self) -> None:
        pass

    def score(self, batch: RolloutBatch, sources: list[str]) -> dict[str, float]:
        """The in-forward divergences: nothing to score before the update, and no advantages of their own."""
        batch.advantages = torch.zeros_like(batch.sampler_logprobs)
        return {}

    def hidden_term(self, micro: RolloutBatch | None) -> HiddenTerm | None:
        return None

    def add_term(
        self, loss: torch.Tensor, output: PolicyOutput, micro: RolloutBatch, num_tokens: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``loss`` plus ``kl_coef`` times the term the policy forward computed, averaged over the tokens."""
        if output.term is None:
            return loss, {}
        kl_sum = (output.term * micro.loss_mask).sum()
        return (
            loss + self.options.kl_coef * kl_sum / num_tokens,
            {self.term_metric: float(kl_sum.detach()) / num_tokens},
        )


def teacher_metrics(batch: RolloutBatch) -> dict[str, float]:
    """The sampled-token reverse KL and teacher log-prob per completion token (``batch.teacher_logprobs`` set)."""
    mask = batch.loss_mask
    num_tokens = max(float(mask.sum()), 1.0)
    return dict(
        reverse_kl=float(reverse_kl(batch.sampler_logprobs, batch.teacher_logprobs, mask).sum()) / num_tokens,
        teacher_logprob=float((batch.teacher_logprobs * mask).sum()) / num_tokens,
    )
