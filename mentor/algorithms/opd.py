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
from mentor.score.base import Teacher, score_with_teacher
from mentor.score.local import LocalTeacher
from mentor.tasks.graders import Grader
from mentor.update.divergence import (FullReverseKL, GeneralizedJSD, TeacherInputs, TeacherTopK, TeacherTopKReverseKL,
                                      teacher_top_k)
from mentor.update.logprobs import PolicyOutput
from mentor.update.losses import carries_signal, policy_gradient_loss
from mentor.weigh.advantages import distillation_advantages, group_baseline_advantages, reverse_kl

class TeacherPerSource:
    """tinker-cookbook's multi-teacher distillation: one teacher per data set, in one run.

    Each prompt carries its data set's name (``EncodedExample.source``); its rollouts are scored by that
    data set's teacher. The student, the loss and the advantage are unchanged: only who grades differs.
    """

    def __init__(self, teachers: dict[str, Teacher], params: dict[str, int] | None = None):
        self.teachers, self.params = teachers, params or {}

    def score(self, batch: RolloutBatch, sources: list[str]) -> tuple[torch.Tensor, float]:
        """Teacher log-probs for every row, and the FLOPs the teachers spent (teachers differ in size)."""
        out = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
        flops = 0.0
        for source in sorted(set(sources)):
            if source not in self.teachers:
                raise KeyError(f"no teacher for data set {source!r} (teachers: {', '.join(self.teachers)})")
            rows = torch.tensor([i for i, s in enumerate(sources) if s == source])
            subset = batch.select(rows)
            out[rows] = score_with_teacher(self.teachers[source], subset)
            flops += 2.0 * self.params.get(source, 0) * float(subset.attention_mask.sum())
        return out, flops


DIVERGENCES = ("sampled", "full", "top_k", "jsd")  # what --divergence offers


class OnPolicyDistillation:
    """``divergence`` picks the teacher signal on the student's own samples:

    - ``sampled`` (the Thinking Machines recipe): ``log q(x_t) - log p(x_t)`` of the sampled token, as a
      per-token advantage; any teacher (in-process, a server, one per data set);
    - ``full``: the exact ``KL(q || p)`` over the whole vocabulary at each position, differentiated directly
      (TRL's ``DistillationTrainer`` with beta=1); needs the teacher in-process, runs it in the update;
    - ``top_k``: the same over the TEACHER's ``kl_top_k`` likeliest tokens plus one rest bucket
      (``mentor.update.divergence.bucket_reverse_kl``), the teacher's own distribution (temperature 1), the
      student's at the sampling temperature; the teacher's top-k are scored before the update, in-process
      or by a server (vLLM's ``prompt_logprobs=k``, ``mentor serve-teacher``): the same number either way;
    - ``jsd``: TRL's generalized JSD with ``jsd_beta`` (0 forward ``KL(p || q)``, 1 reverse
      ``KL(q || p)`` as ``full``, between the interpolated JSD), in-process teacher, chunked like ``full``.
    ``full`` and ``top_k`` are the Rao-Blackwellised form of ``sampled`` (same expected gradient at ``kl_discount`` 0,
    lower variance, a vocabulary-wide pass per token).
    Privileged context: a prompt whose ``teacher_prompt_ids`` are set is read by the teacher with that prompt
    before the student's completion (``RolloutBatch.teacher_input_ids``); every divergence compares the two
    models' predictions of the same completion token, each after its own prompt. The student's side is unchanged.
    ``clip_ratio`` > 0 clips the importance ratio (PPO); ``tis_cap`` > 0 truncates it at that cap (TIS).
    """

    name = "opd"
    on_policy = True

    def __init__(self, sampler: Sampler, teacher: Teacher | TeacherPerSource, tokenizer, *, group_size: int,
                 temperature: float,
                 kl_coef: float = 1.0, kl_discount: float = 0.0, loss: str = "importance_sampling",
                 reward_coef: float = 0.0, grader: Grader | None = None, divergence: str = "sampled",
                 kl_top_k: int = 0, clip_ratio: float = 0.0, jsd_beta: float = 0.5, tis_cap: float = 0.0):
        self.sampler, self.teacher, self.tokenizer = sampler, teacher, tokenizer
        self.group_size, self.temperature = group_size, temperature
        self.kl_coef, self.kl_discount, self.loss_name = kl_coef, kl_discount, loss
        self.clip_ratio, self.tis_cap = clip_ratio, tis_cap
        self.reward_coef, self.grader = reward_coef, grader
        if divergence not in DIVERGENCES:
            raise MentorError(f"divergence {divergence!r} is unknown: use {', '.join(DIVERGENCES)}")
        if not 0 <= jsd_beta <= 1:
            raise MentorError(f"jsd_beta must lie in [0, 1] (got {jsd_beta})")
        self.divergence, self.jsd_beta = divergence, jsd_beta
        self.kl_teacher_model, self.kl_top_k = None, kl_top_k if divergence == "top_k" else 0
        if divergence == "top_k":
            if kl_top_k < 1:
                raise MentorError(f"divergence='top_k' needs kl_top_k >= 1 (got {kl_top_k})")
            if not (isinstance(teacher, LocalTeacher) or callable(getattr(teacher, "compute_top_k", None))):
                raise MentorError("divergence='top_k' needs one teacher that returns its top-k log-probs (in-process "
                                  f"or a server), not a {type(teacher).__name__}")
        elif divergence != "sampled":
            if not isinstance(teacher, LocalTeacher):  # DistillConfig refuses this before anything loads
                raise MentorError(f"divergence={divergence!r} needs a LocalTeacher's whole distribution, "
                                  f"not a {type(teacher).__name__}")
            self.kl_teacher_model = teacher.model  # the policy forward runs it next to the student
        self.teacher_context = context_length(teacher.model) if isinstance(teacher, LocalTeacher) else None

    def collect(self, examples: list[EncodedExample]) -> tuple[RolloutBatch, dict[str, float]]:
        t0 = time.perf_counter()
        batch, repeated = sample_groups(self.sampler, self.tokenizer, examples, self.group_size)
        add_teacher_prompts(batch, [e.teacher_prompt_ids for e in repeated], self.tokenizer.pad_token_id)
        self._check_teacher_context(batch)
        t1 = time.perf_counter()
        mask = batch.loss_mask
        num_tokens = max(float(mask.sum()), 1.0)
        metrics = {}
        if self.kl_teacher_model is not None:
            # the teacher runs in the update, next to the student; ``loss`` adds (and logs) full_reverse_kl
            batch.advantages = torch.zeros_like(batch.sampler_logprobs)
        elif self.kl_top_k:
            # the teacher's top-k now (one pass, or one request per batch_size sequences); the student's side
            # is gathered in the policy forward and ``loss`` adds (and logs) it as full_reverse_kl
            top = self._teacher_top_k(batch)
            batch.teacher_top_ids, batch.teacher_top_logprobs = top.ids, top.logprobs
            batch.teacher_logprobs = top.token_logprobs * mask
            batch.advantages = torch.zeros_like(batch.sampler_logprobs)
            metrics.update(
                reverse_kl=float(reverse_kl(batch.sampler_logprobs, batch.teacher_logprobs, mask).sum()) / num_tokens,
                teacher_logprob=float(batch.teacher_logprobs.sum()) / num_tokens)
        else:
            if isinstance(self.teacher, TeacherPerSource):
                batch.teacher_logprobs, metrics["teacher_flops"] = self.teacher.score(
                    batch, [e.source for e in repeated])
            else:
                batch.teacher_logprobs = score_with_teacher(self.teacher, batch)
            batch.advantages = distillation_advantages(batch.sampler_logprobs, batch.teacher_logprobs, mask,
                                                       self.kl_coef, self.kl_discount)
            metrics.update(
                reverse_kl=float(reverse_kl(batch.sampler_logprobs, batch.teacher_logprobs, mask).sum()) / num_tokens,
                teacher_logprob=float((batch.teacher_logprobs * mask).sum()) / num_tokens)
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
            teacher_tokens=float((batch.attention_mask if batch.teacher_attention_mask is None
                                  else batch.teacher_attention_mask).sum()),
            truncated_fraction=float(batch.truncated.float().mean()),
            time_sample=t1 - t0, time_score=t2 - t1)
        return batch, metrics

    def _check_teacher_context(self, batch: RolloutBatch) -> None:
        """A teacher prompt + completion past the in-process teacher's context is one line, not a model error
        (the recipes leave room for --max-new-tokens; examples made in Python may not)."""
        if batch.teacher_attention_mask is None or self.teacher_context is None:
            return
        longest = int(batch.teacher_attention_mask.sum(1).max())
        if longest > self.teacher_context:
            raise MentorError(f"the teacher's prompt and the completion make {longest} tokens, over the teacher's "
                              f"context of {self.teacher_context}: shorten the teacher's prompt or lower "
                              "--max-new-tokens")

    def _teacher_top_k(self, batch: RolloutBatch) -> TeacherTopK:
        """The teacher's top-``kl_top_k`` at the completion tokens, ``[B, T(, k)]`` on the CPU (with privileged
        context scored on the teacher's own sequences, then moved onto the student's positions)."""
        if isinstance(self.teacher, LocalTeacher):
            model, pieces = self.teacher.model, []
            device = next(model.parameters()).device
            input_ids, attention_mask = batch.input_ids, batch.attention_mask
            if batch.teacher_input_ids is not None:
                input_ids, attention_mask = batch.teacher_input_ids, batch.teacher_attention_mask
            wanted = batch.to_teacher_positions(batch.loss_mask) > 0
            for rows in torch.split(torch.arange(len(batch)), self.teacher.batch_size):
                # the teacher's whole head, as a server normalises over it
                top = teacher_top_k(model, input_ids[rows].to(device), attention_mask[rows].to(device),
                                    wanted[rows].to(device), self.kl_top_k)
                pieces.append(TeacherTopK(*(t.cpu() for t in top[:3])))
            top = TeacherTopK(*(torch.cat(parts) for parts in zip(*(p[:3] for p in pieces))))
            return TeacherTopK(*(batch.to_student_positions(t) for t in top[:3]))
        sequences, _ = batch.teacher_sequences()
        answers = self.teacher.compute_top_k(sequences, self.kl_top_k)
        k = answers[0].ids.shape[-1] if answers else self.kl_top_k
        shape = (batch.input_ids if batch.teacher_input_ids is None else batch.teacher_input_ids).shape
        out = TeacherTopK(torch.zeros(shape), torch.zeros((*shape, k), dtype=torch.long), torch.zeros((*shape, k)))
        for i, (sequence, answer) in enumerate(zip(sequences, answers)):
            for field, value in zip(out, answer[:3]):
                field[i, :len(sequence)] = value
        return TeacherTopK(*(batch.to_student_positions(t) for t in out[:3]))

    def forward_options(self, micro: RolloutBatch | None = None) -> dict:
        """The policy forward's arguments for ``micro``: with ``divergence`` full/top_k/jsd it also computes the
        per-position divergence to the teacher from the student's hidden states (inside the DDP/FSDP forward)."""
        options = {"temperature": self.temperature, "with_entropy": True}
        if self.kl_top_k and micro is not None:
            options["hidden_term"] = TeacherTopKReverseKL(micro.teacher_top_ids, micro.teacher_top_logprobs)
        elif self.kl_teacher_model is not None:
            # with privileged context the teacher reads its own prompt + the micro-batch's completions
            inputs = TeacherInputs.of(micro) if micro is not None else None
            options["hidden_term"] = (GeneralizedJSD(self.kl_teacher_model, self.jsd_beta, inputs)
                                      if self.divergence == "jsd" else FullReverseKL(self.kl_teacher_model,
                                                                                     teacher_inputs=inputs))
        return options

    def carries_signal(self, batch: RolloutBatch) -> bool:
        # the full/top-k reverse KL is a loss term of its own, whatever the advantages
        return (self.kl_teacher_model is not None or bool(self.kl_top_k)
                or carries_signal(batch.advantages, batch.loss_mask))

    def loss(self, output: PolicyOutput, micro: RolloutBatch, num_tokens: int) -> tuple[torch.Tensor, dict]:
        """The importance-sampling policy gradient on the advantages, plus ``kl_coef`` times the full (or
        top-k) reverse KL computed in the policy forward."""
        loss, metrics = policy_gradient_loss(output.logprobs, micro, num_tokens, self.clip_ratio, self.tis_cap)
        if output.term is not None:
            kl_sum = (output.term * micro.loss_mask).sum()
            loss = loss + self.kl_coef * kl_sum / num_tokens
            metrics["generalized_jsd" if self.divergence == "jsd" else "full_reverse_kl"] = \
                float(kl_sum.detach()) / num_tokens
        return loss, metrics
