"""Full-distribution reverse KL to a local teacher, chunked so no (tokens x vocab) float32 tensor lives whole.

The sampled-token estimate ``log q(x_t) - log p(x_t)`` (what OPD trains on) needs one gathered log-prob per
model. When the teacher runs in-process its whole next-token distribution is available, and the exact
per-position reverse KL

    KL_t = sum_v pi_s(v | x_<t) * (log pi_s(v | x_<t) - log pi_t(v | x_<t))

is a lower-variance signal (TRL's ``DistillationTrainer`` with beta=1 trains on it). Both models' decoders run
once; the two LM heads, log-softmaxes and the sum over the vocabulary run over chunks of positions, each
recomputed in backward (activation checkpointing), so peak memory is a few chunks of logits.

``top_k > 0`` approximates with the student's k most likely tokens plus one "rest of the vocabulary" bucket:
the KL between those (k+1)-bucket distributions. It never exceeds the full KL (merging outcomes can only
lose information), equals it when the tail mass is zero, and is what a teacher that returns only top-k
log-probs can support.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mentor.update.logprobs import causal_lm_of, chunk_rows, head_fn, last_hidden_states


def _chunk_reverse_kl(student_logits_of, teacher_logits_of, student_hidden: torch.Tensor,
                      teacher_hidden: torch.Tensor, top_k: int) -> torch.Tensor:
    student_logprobs = F.log_softmax(student_logits_of(student_hidden), dim=-1)
    with torch.no_grad():
        teacher_logprobs = F.log_softmax(teacher_logits_of(teacher_hidden), dim=-1)
    if top_k <= 0 or top_k >= student_logprobs.shape[-1]:
        return (student_logprobs.exp() * (student_logprobs - teacher_logprobs)).sum(-1)
    index = student_logprobs.detach().topk(top_k, dim=-1).indices
    student_top, teacher_top = student_logprobs.gather(-1, index), teacher_logprobs.gather(-1, index)
    top_kl = (student_top.exp() * (student_top - teacher_top)).sum(-1)
    student_tail, teacher_tail = _log_rest(student_top), _log_rest(teacher_top)
    return top_kl + student_tail.exp() * (student_tail - teacher_tail)


def _log_rest(top_logprobs: torch.Tensor) -> torch.Tensor:
    """``log(1 - sum(exp(top)))``: the log-mass outside the chosen tokens, clamped away from log 0."""
    top_mass = torch.logsumexp(top_logprobs, dim=-1).clamp(max=-1e-7)
    return torch.log(-torch.expm1(top_mass))


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
) -> torch.Tensor:
    """Per-position ``KL(student || teacher)`` of the distribution over token ``t`` as float32 ``[B, T]``.

    Entry ``[b, t]`` compares the two models' predictions of ``input_ids[b, t]`` from ``input_ids[b, :t]``
    (the same alignment as ``token_logprobs``); it is 0 at t=0 and outside ``positions``. Differentiable
    with respect to the student only; the teacher runs without gradients. Both models must share a
    vocabulary (the student's head may have extra padding rows, which are ignored).
    """
    student_hidden = last_hidden_states(student, input_ids, attention_mask)
    wanted = attention_mask.bool() if positions is None else positions.bool() & attention_mask.bool()
    return reverse_kl_from_hidden(student, student_hidden, teacher, input_ids, attention_mask, wanted,
                                  temperature=temperature, top_k=top_k, chunk_size=chunk_size)


def reverse_kl_from_hidden(student: nn.Module, student_hidden: torch.Tensor, teacher: nn.Module,
                           input_ids: torch.Tensor, attention_mask: torch.Tensor, wanted: torch.Tensor, *,
                           temperature: float = 1.0, top_k: int = 0, chunk_size: int | None = None) -> torch.Tensor:
    """``reverse_kl`` from the student's final hidden states, so a training step runs its decoder once."""
    with torch.no_grad():
        teacher_hidden = last_hidden_states(teacher, input_ids, attention_mask)
    wanted = wanted.bool().clone()
    wanted[:, 0] = False
    rows, cols = wanted.nonzero(as_tuple=True)
    student_flat, teacher_flat = student_hidden[rows, cols - 1], teacher_hidden[rows, cols - 1]
    vocab = min(_vocab_rows(student), _vocab_rows(teacher))
    student_logits_of = _truncated(head_fn(causal_lm_of(student), temperature), vocab)
    teacher_logits_of = _truncated(head_fn(causal_lm_of(teacher), temperature), vocab)
    # three float32 (chunk x vocab) tensors are alive at once: the student's, the teacher's, their product
    chunk = chunk_size or chunk_rows(vocab, student_hidden.device, tensors=3)
    needs_grad = torch.is_grad_enabled() and student_flat.requires_grad
    pieces = []
    for start in range(0, student_flat.shape[0], chunk):
        args = (student_logits_of, teacher_logits_of, student_flat[start: start + chunk],
                teacher_flat[start: start + chunk], top_k)
        pieces.append(checkpoint(_chunk_reverse_kl, *args, use_reentrant=False) if needs_grad
                      else _chunk_reverse_kl(*args))
    out = student_hidden.new_zeros(input_ids.shape, dtype=torch.float32)
    return out.index_put((rows, cols), torch.cat(pieces)) if pieces else out


class FullReverseKL:
    """The policy forward's ``hidden_term`` for a full (``top_k`` 0) or top-k reverse KL to ``teacher``.

    A plain object (no tensors of its own), so DDP/FSDP pass it through their forward untouched.
    """

    def __init__(self, teacher: nn.Module, top_k: int = 0):
        self.teacher, self.top_k = teacher, top_k

    def __call__(self, model: nn.Module, hidden: torch.Tensor, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor, wanted: torch.Tensor, temperature: float) -> torch.Tensor:
        return reverse_kl_from_hidden(model, hidden, self.teacher, input_ids, attention_mask, wanted,
                                      temperature=temperature, top_k=self.top_k)


def naive_reverse_kl(student: nn.Module, teacher: nn.Module, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Reference: both models' full float32 log-softmax over the whole sequence. For tests and benchmarks."""
    student_logits = student(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    with torch.no_grad():
        teacher_logits = teacher(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
    student_logprobs = F.log_softmax(student_logits[..., :vocab] / temperature, dim=-1)
    teacher_logprobs = F.log_softmax(teacher_logits[..., :vocab] / temperature, dim=-1)
    kl = (student_logprobs.exp() * (student_logprobs - teacher_logprobs)).sum(-1)
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    out[:, 1:] = kl[:, :-1] * attention_mask[:, 1:]
    return out


def _vocab_rows(model: nn.Module) -> int:
    return causal_lm_of(model).get_output_embeddings().weight.shape[0]


def _truncated(logits_of, vocab: int):
    """Heads padded past the shared vocabulary (common in checkpoints) are cut to it."""
    return lambda hidden: logits_of(hidden)[..., :vocab]
