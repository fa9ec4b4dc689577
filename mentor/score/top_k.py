"""A teacher's top-k: its k likeliest next tokens and their log-probs at each position.

OPD's ``top_k`` divergence (``mentor.weigh.divergences.top_k``) compares the student with them. A teacher that can
answer says so: ``supports_top_k = True`` and ``batch_top_k(batch, k)`` (``TopKTeacher``). The in-process teacher
computes them (``teacher_top_k``), a server returns them (vLLM's ``prompt_logprobs=k``, ``mentor serve-teacher``):
the same numbers either way.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from mentor.models.logprobs import causal_lm_of, chunk_rows, head_fn, last_hidden_states, truncated_head, vocab_rows
from mentor.rollout import RolloutBatch
from mentor.score.base import Teacher


class TeacherTopK(NamedTuple):
    """A teacher's answer about token sequences, aligned with ``input_ids`` (entry ``t`` is about the prediction
    of token ``t`` from ``x_<t``; 0 where not scored): ``token_logprobs`` ``[..., T]`` log p of the actual token,
    ``ids`` / ``logprobs`` ``[..., T, k]`` its k likeliest tokens and their log-probs (descending), and
    ``token_ranks`` ``[..., T]`` the actual token's rank (1 + how many tokens are likelier; vLLM's definition),
    when asked for. The teacher's own distribution (temperature 1): what a server returns for prompt log-probs."""

    token_logprobs: torch.Tensor
    ids: torch.Tensor
    logprobs: torch.Tensor
    token_ranks: torch.Tensor | None = None


@torch.no_grad()
def teacher_top_k(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    wanted: torch.Tensor,
    k: int,
    *,
    vocab: int | None = None,
    with_ranks: bool = False,
    chunk_size: int | None = None,
) -> TeacherTopK:
    """``model``'s top-``k`` next-token log-probs at the bool ``[B, T]`` positions ``wanted`` (float32, chunked
    like ``token_logprobs``). ``vocab`` cuts a head padded past the shared vocabulary. The in-process ``top_k``
    divergence (``LocalTeacher.batch_top_k``) and ``mentor serve-teacher``'s ``prompt_logprobs=k`` both come
    from here."""
    hidden = last_hidden_states(model, input_ids, attention_mask)
    return teacher_top_k_from_hidden(
        model,
        hidden,
        input_ids,
        wanted & attention_mask.bool(),
        k,
        vocab=vocab,
        with_ranks=with_ranks,
        chunk_size=chunk_size,
    )


@torch.no_grad()
def teacher_top_k_from_hidden(
    model: nn.Module,
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    wanted: torch.Tensor,
    k: int,
    *,
    vocab: int | None = None,
    with_ranks: bool = False,
    chunk_size: int | None = None,
) -> TeacherTopK:
    """``teacher_top_k`` from the decoder's final hidden states (a server that also needs them runs it once)."""
    wanted = wanted.bool().clone()
    wanted[:, 0] = False  # nothing predicts the first token
    rows, cols = wanted.nonzero(as_tuple=True)
    flat_hidden, targets = hidden[rows, cols - 1], input_ids[rows, cols]
    vocab = vocab or vocab_rows(model)
    logits_of = truncated_head(head_fn(causal_lm_of(model), 1.0), vocab)
    k = min(k, vocab)
    chunk = chunk_size or chunk_rows(vocab, hidden.device, tensors=2)
    pieces = []
    for start in range(0, flat_hidden.shape[0], chunk):
        logprobs = F.log_softmax(logits_of(flat_hidden[start : start + chunk]), dim=-1)
        token = logprobs.gather(-1, targets[start : start + chunk].unsqueeze(-1))
        top_logprobs, top_ids = logprobs.topk(k, dim=-1)
        ranks = (logprobs >= token).sum(-1) if with_ranks else None
        pieces.append((token.squeeze(-1), top_ids, top_logprobs, ranks))
    shape = input_ids.shape
    out = TeacherTopK(
        hidden.new_zeros(shape, dtype=torch.float32),
        input_ids.new_zeros((*shape, k)),
        hidden.new_zeros((*shape, k), dtype=torch.float32),
        input_ids.new_zeros(shape) if with_ranks else None,
    )
    if pieces:
        for field, values in zip(out, zip(*pieces)):
            if field is not None:
                field[rows, cols] = torch.cat(values).to(field.dtype)
    return out


class TopKTeacher(Teacher, Protocol):
    """A teacher that also returns its top-k (``supports_top_k`` True): ``batch_top_k`` gives ``TeacherTopK`` of
    ``[B, T(, k)]`` on the CPU at the student's positions of ``batch``'s completion tokens (privileged context
    scored on the teacher's own sequences, then moved onto the student's)."""

    supports_top_k: bool

    def batch_top_k(self, batch: RolloutBatch, k: int) -> TeacherTopK: ...


def supports_top_k(teacher) -> bool:
    """Whether ``teacher`` declares it returns its top-k log-probs."""
    return bool(getattr(teacher, "supports_top_k", False))


def top_k_from_sequences(compute_top_k, batch: RolloutBatch, k: int) -> TeacherTopK:
    """``batch_top_k`` from a per-sequence ``compute_top_k(sequences, k) -> list[TeacherTopK]`` (a server's)."""
    sequences, _ = batch.teacher_sequences()
    answers = compute_top_k(sequences, k)
    k = answers[0].ids.shape[-1] if answers else k
    shape = (batch.input_ids if batch.teacher_input_ids is None else batch.teacher_input_ids).shape
    out = TeacherTopK(torch.zeros(shape), torch.zeros((*shape, k), dtype=torch.long), torch.zeros((*shape, k)))
    for i, (sequence, answer) in enumerate(zip(sequences, answers)):
        for field, value in zip(out, answer[:3]):
            field[i, : len(sequence)] = value
    return TeacherTopK(*(batch.to_student_positions(t) for t in out[:3]))
