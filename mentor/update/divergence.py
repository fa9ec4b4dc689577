"""Full-distribution reverse KL to a local teacher, chunked so no (tokens x vocab) float32 tensor lives whole.

The sampled-token estimate ``log q(x_t) - log p(x_t)`` (what OPD trains on) needs one gathered log-prob per
model. When the teacher runs in-process its whole next-token distribution is available, and the exact
per-position reverse KL

    KL_t = sum_v pi_s(v | x_<t) * (log pi_s(v | x_<t) - log pi_t(v | x_<t))

is a lower-variance signal (TRL's ``DistillationTrainer`` with beta=1 trains on it). Both models' decoders run
once; the two LM heads, log-softmaxes and the sum over the vocabulary run over chunks of positions, each
recomputed in backward (activation checkpointing), so peak memory is a few chunks of logits.

``top_k > 0`` approximates with the TEACHER's k most likely tokens at each position plus one "rest of the
vocabulary" bucket: the KL between the two (k+1)-bucket distributions,

    KL_k,t = sum_{v in S_t} q(v) (log q(v) - log p(v)) + q(R_t) (log q(R_t) - log p(R_t)),
    S_t = the teacher's top-k ids at t,  R_t = the rest,  q(R_t) = 1 - sum_{v in S_t} q(v)  (likewise p).

It never exceeds the full KL (merging outcomes can only lose information), is never negative, equals it when
the teacher's top-k carry all its mass, and needs of the teacher exactly what a server returns for
``prompt_logprobs=k`` (the k ids and their log-probs): so the in-process and the remote ``top_k`` are the
same quantity. The student's log-probs are gathered at the teacher's ids from its full log-softmax, so the
term stays differentiable through the student (``top_k_reverse_kl_from_hidden``, ``TeacherTopKReverseKL``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mentor.errors import MentorError
from mentor.models.logprobs import causal_lm_of, chunk_rows, head_fn, last_hidden_states, truncated_head, vocab_rows

# the teacher's top-k (what the top_k divergence compares with), also read here by tests and benchmarks
from mentor.score.top_k import TeacherTopK, teacher_top_k, teacher_top_k_from_hidden  # noqa: F401


def _chunk_reverse_kl(
    student_logits_of, teacher_logits_of, student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, top_k: int
) -> torch.Tensor:
    student_logprobs = F.log_softmax(student_logits_of(student_hidden), dim=-1)
    with torch.no_grad():
        teacher_logprobs = F.log_softmax(teacher_logits_of(teacher_hidden), dim=-1)
    if top_k <= 0 or top_k >= student_logprobs.shape[-1]:
        return (student_logprobs.exp() * (student_logprobs - teacher_logprobs)).sum(-1)
    teacher_top, index = teacher_logprobs.topk(top_k, dim=-1)
    return bucket_reverse_kl(student_logprobs.gather(-1, index), teacher_top)


def bucket_reverse_kl(student_top: torch.Tensor, teacher_top: torch.Tensor) -> torch.Tensor:
    """``KL(q || p)`` between (k+1)-bucket distributions: the k chosen ids (``[..., k]`` log-probs of each
    model at the same ids) and one bucket for the rest of the vocabulary; summed over the last axis."""
    top_kl = (student_top.exp() * (student_top - teacher_top)).sum(-1)
    student_tail, teacher_tail = _log_rest(student_top), _log_rest(teacher_top)
    return top_kl + student_tail.exp() * (student_tail - teacher_tail)


def _log_rest(top_logprobs: torch.Tensor) -> torch.Tensor:
    """``log(1 - sum(exp(top)))``: the log-mass outside the chosen tokens, clamped away from log 0."""
    top_mass = torch.logsumexp(top_logprobs, dim=-1).clamp(max=-1e-7)
    return torch.log(-torch.expm1(top_mass))


class TeacherInputs(NamedTuple):
    """What the teacher reads when its prompt differs from the student's (privileged context): its own
    ``input_ids`` / ``attention_mask`` ``[B, T']`` (its prompt + the same completion) and ``shift`` ``[B]``: the
    student's token ``t`` is the teacher's token ``t + shift``. Completions align by their offset from the prompt."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    shift: torch.Tensor

    @classmethod
    def of(cls, batch) -> TeacherInputs | None:
        """A ``RolloutBatch``'s teacher sequences, or None when the teacher reads the student's."""
        if batch.teacher_input_ids is None:
            return None
        return cls(batch.teacher_input_ids, batch.teacher_attention_mask, batch.teacher_shift)


def reverse_kl(
    student: nn.Module,
    teacher: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    positions: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    chunk_size: int | None = None,
    teacher_inputs: TeacherInputs | None = None,
) -> torch.Tensor:
    """Per-position ``KL(student || teacher)`` of the distribution over token ``t`` as float32 ``[B, T]``.

    Entry ``[b, t]`` compares the two models' predictions of ``input_ids[b, t]`` from ``input_ids[b, :t]``
    (the same alignment as ``token_logprobs``); it is 0 at t=0 and outside ``positions``. Differentiable
    with respect to the student only; the teacher runs without gradients. Both models must share a
    vocabulary (the student's head may have extra padding rows, which are ignored). ``teacher_inputs``: the
    teacher reads its own prompt instead (its prediction of the same token, at ``t + shift``); ``positions``
    must then lie in the completions.
    """
    student_hidden = last_hidden_states(student, input_ids, attention_mask)
    wanted = attention_mask.bool() if positions is None else positions.bool() & attention_mask.bool()
    return reverse_kl_from_hidden(
        student,
        student_hidden,
        teacher,
        input_ids,
        attention_mask,
        wanted,
        temperature=temperature,
        top_k=top_k,
        chunk_size=chunk_size,
        teacher_inputs=teacher_inputs,
    )


def reverse_kl_from_hidden(
    student: nn.Module,
    student_hidden: torch.Tensor,
    teacher: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    wanted: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    chunk_size: int | None = None,
    teacher_inputs: TeacherInputs | None = None,
) -> torch.Tensor:
    """``reverse_kl`` from the student's final hidden states, so a training step runs its decoder once."""
    # three float32 (chunk x vocab) tensors are alive at once: the student's, the teacher's, their product
    return _per_position_from_hidden(
        _chunk_reverse_kl,
        top_k,
        3,
        student,
        student_hidden,
        teacher,
        input_ids,
        attention_mask,
        wanted,
        temperature=temperature,
        chunk_size=chunk_size,
        teacher_inputs=teacher_inputs,
    )


def _per_position_from_hidden(
    chunk_fn,
    option,
    tensors: int,
    student: nn.Module,
    student_hidden: torch.Tensor,
    teacher: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    wanted: torch.Tensor,
    *,
    temperature: float,
    chunk_size: int | None,
    teacher_inputs: TeacherInputs | None = None,
) -> torch.Tensor:
    """``chunk_fn(student_logits_of, teacher_logits_of, student_hidden, teacher_hidden, option)`` over chunks of
    the wanted positions (each recomputed in backward), scattered back to a float32 ``[B, T]``. With
    ``teacher_inputs`` the teacher's hidden state for the student's position ``t`` is its own at ``t + shift``."""
    wanted = wanted.bool().clone()
    wanted[:, 0] = False
    rows, cols = wanted.nonzero(as_tuple=True)
    with torch.no_grad():
        if teacher_inputs is None:
            teacher_hidden, teacher_cols = last_hidden_states(teacher, input_ids, attention_mask), cols
        else:
            teacher_hidden = last_hidden_states(teacher, teacher_inputs.input_ids, teacher_inputs.attention_mask)
            teacher_cols = cols + teacher_inputs.shift.to(cols.device)[rows]
    student_flat, teacher_flat = student_hidden[rows, cols - 1], teacher_hidden[rows, teacher_cols - 1]
    vocab = min(vocab_rows(student), vocab_rows(teacher))
    student_logits_of = truncated_head(head_fn(causal_lm_of(student), temperature), vocab)
    teacher_logits_of = truncated_head(head_fn(causal_lm_of(teacher), temperature), vocab)
    chunk = chunk_size or chunk_rows(vocab, student_hidden.device, tensors=tensors)
    needs_grad = torch.is_grad_enabled() and student_flat.requires_grad
    pieces = []
    for start in range(0, student_flat.shape[0], chunk):
        args = (
            student_logits_of,
            teacher_logits_of,
            student_flat[start : start + chunk],
            teacher_flat[start : start + chunk],
            option,
        )
        pieces.append(checkpoint(chunk_fn, *args, use_reentrant=False) if needs_grad else chunk_fn(*args))
    out = student_hidden.new_zeros(input_ids.shape, dtype=torch.float32)
    return out.index_put((rows, cols), torch.cat(pieces)) if pieces else out


class FullReverseKL:
    """The policy forward's ``hidden_term`` for a full (``top_k`` 0) or top-k reverse KL to ``teacher``.

    A plain object (no tensors of its own), so DDP/FSDP pass it through their forward untouched.
    """

    def __init__(self, teacher: nn.Module, top_k: int = 0, teacher_inputs: TeacherInputs | None = None):
        self.teacher, self.top_k, self.teacher_inputs = teacher, top_k, teacher_inputs

    def __call__(
        self,
        model: nn.Module,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        wanted: torch.Tensor,
        temperature: float,
    ) -> torch.Tensor:
        return reverse_kl_from_hidden(
            model,
            hidden,
            self.teacher,
            input_ids,
            attention_mask,
            wanted,
            temperature=temperature,
            top_k=self.top_k,
            teacher_inputs=self.teacher_inputs,
        )


def _chunk_top_k_reverse_kl(
    student_logits_of, student_hidden: torch.Tensor, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor
) -> torch.Tensor:
    student_logprobs = F.log_softmax(student_logits_of(student_hidden), dim=-1)
    return bucket_reverse_kl(student_logprobs.gather(-1, teacher_ids), teacher_logprobs)


def top_k_reverse_kl_from_hidden(
    student: nn.Module,
    student_hidden: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    wanted: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Per-position ``bucket_reverse_kl`` between the student (its full log-softmax at ``temperature``, gathered
    at the teacher's ids ``[B, T, k]``) and the teacher's top-k log-probs ``[B, T, k]``; float32 ``[B, T]``
    aligned like ``reverse_kl``, 0 at t=0 and outside ``wanted``. Differentiable through the student only; one
    float32 chunk x vocabulary tensor alive (recomputed in backward)."""
    wanted = wanted.bool().clone()
    wanted[:, 0] = False
    rows, cols = wanted.nonzero(as_tuple=True)
    flat_hidden = student_hidden[rows, cols - 1]
    ids, teacher_top = teacher_ids[rows, cols], teacher_logprobs[rows, cols].float()
    vocab = vocab_rows(student)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise MentorError(
            f"the teacher's top-k names token id {int(ids.max())} outside the student's "
            f"{vocab}-token vocabulary: teacher and student must share one vocabulary"
        )
    logits_of = head_fn(causal_lm_of(student), temperature)
    chunk = chunk_size or chunk_rows(vocab, student_hidden.device, tensors=2)
    needs_grad = torch.is_grad_enabled() and flat_hidden.requires_grad
    pieces = []
    for start in range(0, flat_hidden.shape[0], chunk):
        args = (
            logits_of,
            flat_hidden[start : start + chunk],
            ids[start : start + chunk],
            teacher_top[start : start + chunk],
        )
        pieces.append(
            checkpoint(_chunk_top_k_reverse_kl, *args, use_reentrant=False)
            if needs_grad
            else _chunk_top_k_reverse_kl(*args)
        )
    out = student_hidden.new_zeros(wanted.shape, dtype=torch.float32)
    return out.index_put((rows, cols), torch.cat(pieces)) if pieces else out


class TeacherTopKReverseKL:
    """The policy forward's ``hidden_term`` for OPD's ``top_k``: the bucketed reverse KL to a teacher's top-k
    (``ids`` / ``logprobs`` ``[B, T, k]``, aligned with the micro-batch's tokens), scored before the update,
    in-process or by a server. A plain object, so DDP/FSDP pass it through their forward untouched."""

    def __init__(self, ids: torch.Tensor, logprobs: torch.Tensor):
        self.ids, self.logprobs = ids, logprobs

    def __call__(
        self,
        model: nn.Module,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        wanted: torch.Tensor,
        temperature: float,
    ) -> torch.Tensor:
        return top_k_reverse_kl_from_hidden(
            model,
            hidden,
            self.ids.to(hidden.device),
            self.logprobs.to(hidden.device),
            wanted & attention_mask.bool(),
            temperature=temperature,
        )


def _generalized_jsd_of(student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """TRL's ``generalized_jsd_loss`` (GKD / ``DistillationTrainer``) summed over the last (vocabulary) axis:
    beta 0 is ``KL(p_teacher || q)``, beta 1 ``KL(q || p_teacher)``, otherwise, with the mixture
    ``m = beta * p_teacher + (1 - beta) * q`` (in probability space, by logsumexp),
    ``beta * KL(p_teacher || m) + (1 - beta) * KL(q || m)``."""
    if beta == 0:
        return (teacher_logprobs.exp() * (teacher_logprobs - student_logprobs)).sum(-1)
    if beta == 1:
        return (student_logprobs.exp() * (student_logprobs - teacher_logprobs)).sum(-1)
    mixture = torch.logsumexp(
        torch.stack([student_logprobs + math.log1p(-beta), teacher_logprobs + math.log(beta)]), dim=0
    )
    kl_teacher = (teacher_logprobs.exp() * (teacher_logprobs - mixture)).sum(-1)
    kl_student = (student_logprobs.exp() * (student_logprobs - mixture)).sum(-1)
    return beta * kl_teacher + (1 - beta) * kl_student


def _chunk_generalized_jsd(
    student_logits_of, teacher_logits_of, student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, beta: float
) -> torch.Tensor:
    student_logprobs = F.log_softmax(student_logits_of(student_hidden), dim=-1)
    with torch.no_grad():
        teacher_logprobs = F.log_softmax(teacher_logits_of(teacher_hidden), dim=-1)
    return _generalized_jsd_of(student_logprobs, teacher_logprobs, beta)


def generalized_jsd_from_hidden(
    student: nn.Module,
    student_hidden: torch.Tensor,
    teacher: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    wanted: torch.Tensor,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    teacher_inputs: TeacherInputs | None = None,
) -> torch.Tensor:
    """Per-position generalized JSD (``_generalized_jsd_of``) between the student's and the in-process
    teacher's next-token distributions, float32 ``[B, T]`` aligned like ``reverse_kl``; chunked the same way
    (about six float32 chunk x vocab tensors alive: two log-softmaxes, the stacked pair, the mixture, a product)."""
    if not 0 <= beta <= 1:
        raise ValueError(f"the generalized JSD's beta must lie in [0, 1] (got {beta})")
    return _per_position_from_hidden(
        _chunk_generalized_jsd,
        float(beta),
        6,
        student,
        student_hidden,
        teacher,
        input_ids,
        attention_mask,
        wanted,
        temperature=temperature,
        chunk_size=chunk_size,
        teacher_inputs=teacher_inputs,
    )


def generalized_jsd(
    student: nn.Module,
    teacher: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    beta: float = 0.5,
    positions: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    teacher_inputs: TeacherInputs | None = None,
) -> torch.Tensor:
    """``generalized_jsd_from_hidden`` from the token ids (runs the student's decoder)."""
    student_hidden = last_hidden_states(student, input_ids, attention_mask)
    wanted = attention_mask.bool() if positions is None else positions.bool() & attention_mask.bool()
    return generalized_jsd_from_hidden(
        student,
        student_hidden,
        teacher,
        input_ids,
        attention_mask,
        wanted,
        beta=beta,
        temperature=temperature,
        chunk_size=chunk_size,
        teacher_inputs=teacher_inputs,
    )


class GeneralizedJSD:
    """The policy forward's ``hidden_term`` for the generalized JSD (``beta``) to an in-process ``teacher``."""

    def __init__(self, teacher: nn.Module, beta: float = 0.5, teacher_inputs: TeacherInputs | None = None):
        if not 0 <= beta <= 1:
            raise ValueError(f"the generalized JSD's beta must lie in [0, 1] (got {beta})")
        self.teacher, self.beta, self.teacher_inputs = teacher, beta, teacher_inputs

    def __call__(
        self,
        model: nn.Module,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        wanted: torch.Tensor,
        temperature: float,
    ) -> torch.Tensor:
        return generalized_jsd_from_hidden(
            model,
            hidden,
            self.teacher,
            input_ids,
            attention_mask,
            wanted,
            beta=self.beta,
            temperature=temperature,
            teacher_inputs=self.teacher_inputs,
        )


def naive_generalized_jsd(
    student: nn.Module,
    teacher: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    beta: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Reference: TRL's formula on both models' whole float32 log-softmax. For tests and benchmarks."""
    student_logprobs, teacher_logprobs = _naive_logprobs(student, teacher, input_ids, attention_mask, temperature)
    if beta == 0:
        jsd = F.kl_div(student_logprobs, teacher_logprobs, reduction="none", log_target=True).sum(-1)
    elif beta == 1:
        jsd = F.kl_div(teacher_logprobs, student_logprobs, reduction="none", log_target=True).sum(-1)
    else:
        mixture = torch.logsumexp(
            torch.stack([student_logprobs + math.log1p(-beta), teacher_logprobs + math.log(beta)]), dim=0
        )
        jsd = (
            beta * F.kl_div(mixture, teacher_logprobs, reduction="none", log_target=True)
            + (1 - beta) * F.kl_div(mixture, student_logprobs, reduction="none", log_target=True)
        ).sum(-1)
    return _predicting(jsd, input_ids, attention_mask)


def naive_reverse_kl(
    student: nn.Module,
    teacher: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Reference: both models' full float32 log-softmax over the whole sequence. For tests and benchmarks."""
    student_logprobs, teacher_logprobs = _naive_logprobs(student, teacher, input_ids, attention_mask, temperature)
    kl = (student_logprobs.exp() * (student_logprobs - teacher_logprobs)).sum(-1)
    return _predicting(kl, input_ids, attention_mask)


def _naive_logprobs(
    student: nn.Module, teacher: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both models' whole float32 log-softmax over the shared vocabulary (the teacher's without gradients)."""
    student_logits = student(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    with torch.no_grad():
        teacher_logits = teacher(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
    return (
        F.log_softmax(student_logits[..., :vocab] / temperature, dim=-1),
        F.log_softmax(teacher_logits[..., :vocab] / temperature, dim=-1),
    )


def _predicting(per_position: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Shift a per-position value of the prediction made at ``t - 1`` onto token ``t`` (0 at t=0 and padding)."""
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    out[:, 1:] = per_position[:, :-1] * attention_mask[:, 1:]
    return out
