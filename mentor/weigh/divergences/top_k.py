"""``top_k``: the reverse KL over the TEACHER's ``kl_top_k`` likeliest tokens plus one rest bucket
(``mentor.update.divergence.bucket_reverse_kl``), the teacher's own distribution (temperature 1), the student's at
the sampling temperature. The teacher's top-k are scored before the update, in-process or by a server (vLLM's
``prompt_logprobs=k``, ``mentor serve-teacher``): the same number either way; the student's side is gathered in
the policy forward."""

from __future__ import annotations

import torch

from mentor.errors import MentorError
from mentor.rollout import RolloutBatch
from mentor.score.top_k import supports_top_k
from mentor.update.divergence import TeacherTopKReverseKL
from mentor.update.logprobs import HiddenTerm
from mentor.weigh.divergences.base import TEACHER_TOP_K, Divergence, teacher_metrics


class TopK(Divergence):
    name = "top_k"
    needs = TEACHER_TOP_K

    def check_teacher(self) -> None:
        if self.options.kl_top_k < 1:
            raise MentorError(f"divergence='top_k' needs kl_top_k >= 1 (got {self.options.kl_top_k})")
        if not supports_top_k(self.teacher):
            raise MentorError(
                "divergence='top_k' needs one teacher that returns its top-k log-probs (in-process "
                f"or a server), not a {type(self.teacher).__name__}"
            )

    def score(self, batch: RolloutBatch, sources: list[str]) -> dict[str, float]:
        # one pass, or one request per batch_size sequences
        top = self.teacher.batch_top_k(batch, self.options.kl_top_k)
        batch.teacher_top_ids, batch.teacher_top_logprobs = top.ids, top.logprobs
        batch.teacher_logprobs = top.token_logprobs * batch.loss_mask
        batch.advantages = torch.zeros_like(batch.sampler_logprobs)
        return teacher_metrics(batch)

    def hidden_term(self, micro: RolloutBatch | None) -> HiddenTerm | None:
        return None if micro is None else TeacherTopKReverseKL(micro.teacher_top_ids, micro.teacher_top_logprobs)
