"""On-policy distillation: the student writes the tokens, the teacher grades each one.

    A_t = -kl_coef * (log q_student(x_t) - log p_teacher(x_t))   (+ reward_coef * group-centred reward)

and the update is the importance-sampling policy gradient ``-pi/q * A`` shared with RL.
"""

from __future__ import annotations

import time

import torch

from mentor.data.prompts import EncodedExample
from mentor.errors import MentorError
from mentor.models.loading import context_length
from mentor.rollout import RolloutBatch, add_teacher_prompts
from mentor.sample.base import Sampler, sample_groups
from mentor.score.base import Teacher, teacher_model
from mentor.score.per_source import TeacherPerSource
from mentor.score.top_k import TeacherTopK
from mentor.tasks.graders import Grader
from mentor.update.logprobs import PolicyOutput
from mentor.update.losses import carries_signal, policy_gradient_loss
from mentor.weigh.advantages import group_baseline_advantages
from mentor.weigh.divergences import DIVERGENCES, DivergenceOptions, make_divergence

__all__ = ["DIVERGENCES", "OnPolicyDistillation", "TeacherPerSource"]  # --divergence's names; one teacher per data set


class OnPolicyDistillation:
    """``divergence`` picks the teacher signal on the student's own samples, one of ``mentor.weigh.divergences``:

    - ``sampled`` (the Thinking Machines recipe): ``log q(x_t) - log p(x_t)`` of the sampled token, as a
      per-token advantage; any teacher (in-process, a server, one per data set);
    - ``full``: the exact ``KL(q || p)`` over the whole vocabulary at each position (needs the teacher in-process);
    - ``top_k``: the same over the TEACHER's ``kl_top_k`` likeliest tokens plus one rest bucket (a teacher that
      declares ``supports_top_k``: in-process or a server);
    - ``jsd``: TRL's generalized JSD with ``jsd_beta``, in-process teacher, chunked like ``full``.
    ``full`` and ``top_k`` are the Rao-Blackwellised form of ``sampled`` (same expected gradient at ``kl_discount`` 0,
    lower variance, a vocabulary-wide pass per token).
    Privileged context: a prompt whose ``teacher_prompt_ids`` are set is read by the teacher with that prompt
    before the student's completion (``RolloutBatch.teacher_input_ids``); every divergence compares the two
    models' predictions of the same completion token, each after its own prompt. The student's side is unchanged.
    ``clip_ratio`` > 0 clips the importance ratio (PPO); ``tis_cap`` > 0 truncates it at that cap (TIS).
    """

    name = "opd"
    on_policy = True

    def __init__(
        self,
        sampler: Sampler,
        teacher: Teacher | TeacherPerSource,
        tokenizer,
        *,
        group_size: int,
        temperature: float,
        kl_coef: float = 1.0,
        kl_discount: float = 0.0,
        reward_coef: float = 0.0,
        grader: Grader | None = None,
        divergence: str = "sampled",
        kl_top_k: int = 0,
        clip_ratio: float = 0.0,
        jsd_beta: float = 0.5,
        tis_cap: float = 0.0,
    ):
        self.sampler, self.teacher, self.tokenizer = sampler, teacher, tokenizer
        self.group_size, self.temperature = group_size, temperature
        self.kl_coef, self.kl_discount = kl_coef, kl_discount
        self.clip_ratio, self.tis_cap = clip_ratio, tis_cap
        self.reward_coef, self.grader = reward_coef, grader
        self.divergence, self.jsd_beta = divergence, jsd_beta
        self.kl_top_k = kl_top_k if divergence == "top_k" else 0
        self.signal = make_divergence(divergence, teacher, DivergenceOptions(kl_coef, kl_discount, kl_top_k, jsd_beta))
        model = teacher_model(teacher)
        self.teacher_context = context_length(model) if model is not None else None

    def collect(self, examples: list[EncodedExample]) -> tuple[RolloutBatch, dict[str, float]]:
        t0 = time.perf_counter()
        batch, repeated = sample_groups(self.sampler, self.tokenizer, examples, self.group_size)
        add_teacher_prompts(batch, [e.teacher_prompt_ids for e in repeated], self.tokenizer.pad_token_id)
        self._check_teacher_context(batch)
        t1 = time.perf_counter()
        mask = batch.loss_mask
        num_tokens = max(float(mask.sum()), 1.0)
        metrics = self.signal.score(batch, [e.source for e in repeated])
        t2 = time.perf_counter()
        if self.grader is not None and all(e.reference is not None for e in repeated):  # prompts may lack answers
            batch.rewards = torch.tensor([self.grader(c, e.reference) for c, e in zip(batch.completions, repeated)])
            metrics["reward"] = float(batch.rewards.mean())
            if self.reward_coef:
                batch.advantages += self.reward_coef * group_baseline_advantages(batch.rewards, batch.group_ids, mask)
        metrics.update(
            student_logprob=float((batch.sampler_logprobs * mask).sum()) / num_tokens,
            completion_length=float(mask.sum(1).mean()),
            sampled_tokens=float(batch.attention_mask.sum()),
            teacher_tokens=float(
                (batch.attention_mask if batch.teacher_attention_mask is None else batch.teacher_attention_mask).sum()
            ),
            truncated_fraction=float(batch.truncated.float().mean()),
            time_sample=t1 - t0,
            time_score=t2 - t1,
        )
        return batch, metrics

    def _check_teacher_context(self, batch: RolloutBatch) -> None:
        """A teacher prompt + completion past the in-process teacher's context is one line, not a model error
        (the recipes leave room for --max-new-tokens; examples made in Python may not)."""
        if batch.teacher_attention_mask is None or self.teacher_context is None:
            return
        longest = int(batch.teacher_attention_mask.sum(1).max())
        if longest > self.teacher_context:
            raise MentorError(
                f"the teacher's prompt and the completion make {longest} tokens, over the teacher's "
                f"context of {self.teacher_context}: shorten the teacher's prompt or lower "
                "--max-new-tokens"
            )

    def _teacher_top_k(self, batch: RolloutBatch) -> TeacherTopK:
        """The teacher's top-``kl_top_k`` at the completion tokens, ``[B, T(, k)]`` on the CPU."""
        return self.teacher.batch_top_k(batch, self.kl_top_k)

    def forward_options(self, micro: RolloutBatch | None = None) -> dict:
        """The policy forward's arguments for ``micro``: with ``divergence`` full/top_k/jsd it also computes the
        per-position divergence to the teacher from the student's hidden states (inside the DDP/FSDP forward)."""
        options = {"temperature": self.temperature, "with_entropy": True}
        term = self.signal.hidden_term(micro)
        if term is not None:
            options["hidden_term"] = term
        return options

    def carries_signal(self, batch: RolloutBatch) -> bool:
        # the full/top-k reverse KL is a loss term of its own, whatever the advantages
        return self.signal.in_forward or carries_signal(batch.advantages, batch.loss_mask)

    def loss(self, output: PolicyOutput, micro: RolloutBatch, num_tokens: int) -> tuple[torch.Tensor, dict]:
        """The importance-sampling policy gradient on the advantages, plus ``kl_coef`` times the full (or
        top-k) reverse KL computed in the policy forward."""
        loss, metrics = policy_gradient_loss(output.logprobs, micro, num_tokens, self.clip_ratio, self.tis_cap)
        loss, term_metrics = self.signal.add_term(loss, output, micro, num_tokens)
        return loss, metrics | term_metrics
