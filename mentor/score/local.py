"""A teacher that is a local transformers model: eval mode, no grad, float32 log-probs, chunked head."""

from __future__ import annotations

import torch
from torch import nn

from mentor.models.logprobs import token_logprobs
from mentor.rollout import RolloutBatch, right_pad
from mentor.score.top_k import TeacherTopK, teacher_top_k


class LocalTeacher:
    supports_top_k = True  # a ``TopKTeacher``: its whole head is here (OPD's top_k divergence)

    def __init__(self, model: nn.Module, pad_id: int, batch_size: int = 64):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.pad_id, self.batch_size = pad_id, batch_size

    @torch.no_grad()
    def compute_logprobs(self, sequences: list[list[int]], score_from: list[int] | None = None) -> list[torch.Tensor]:
        device = next(self.model.parameters()).device
        score_from = score_from or [0] * len(sequences)
        out: list[torch.Tensor] = []
        for start in range(0, len(sequences), self.batch_size):
            chunk = sequences[start : start + self.batch_size]
            input_ids, attention_mask = right_pad(chunk, self.pad_id)
            # the LM head only runs where a log-prob is needed: prompts are context, not graded
            first = torch.tensor(score_from[start : start + self.batch_size]).unsqueeze(1)
            positions = torch.arange(input_ids.shape[1]).unsqueeze(0) >= first
            logprobs, _ = token_logprobs(
                self.model, input_ids.to(device), attention_mask.to(device), positions=positions.to(device)
            )
            out.extend(logprobs[i, : len(seq)].cpu() for i, seq in enumerate(chunk))
        return out

    def batch_top_k(self, batch: RolloutBatch, k: int) -> TeacherTopK:
        """``TopKTeacher.batch_top_k``: the padded batch in chunks of ``batch_size`` rows, normalised over the
        teacher's whole head as a server normalises over it."""
        device = next(self.model.parameters()).device
        input_ids, attention_mask = batch.input_ids, batch.attention_mask
        if batch.teacher_input_ids is not None:
            input_ids, attention_mask = batch.teacher_input_ids, batch.teacher_attention_mask
        wanted = batch.to_teacher_positions(batch.loss_mask) > 0
        pieces = []
        for rows in torch.split(torch.arange(len(batch)), self.batch_size):
            top = teacher_top_k(
                self.model, input_ids[rows].to(device), attention_mask[rows].to(device), wanted[rows].to(device), k
            )
            pieces.append(TeacherTopK(*(t.cpu() for t in top[:3])))
        top = TeacherTopK(*(torch.cat(parts) for parts in zip(*(p[:3] for p in pieces))))
        return TeacherTopK(*(batch.to_student_positions(t) for t in top[:3]))

    @torch.no_grad()
    def logprobs_and_top1(
        self, sequences: list[list[int]], score_from: list[int]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For a few sequences (a run's sample log): the log-probs, and the teacher's likeliest token at each
        position (``top1[t]`` is its argmax given ``x_<t``; 0 before ``score_from`` and at t=0)."""
        from mentor.models.logprobs import causal_lm_of, head_fn, last_hidden_states, logprobs_from_hidden

        device = next(self.model.parameters()).device
        out = []
        for seq, first in zip(sequences, score_from):
            input_ids, attention_mask = right_pad([seq], self.pad_id)
            input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
            hidden = last_hidden_states(self.model, input_ids, attention_mask)
            wanted = torch.arange(len(seq), device=device).unsqueeze(0) >= first
            logprobs, _ = logprobs_from_hidden(self.model, hidden, input_ids, wanted)
            logits_of = head_fn(causal_lm_of(self.model), 1.0)
            top1 = torch.zeros(len(seq), dtype=torch.long)
            start = max(first, 1)
            for lo in range(start, len(seq), 256):  # hidden state at t-1 predicts token t
                hi = min(lo + 256, len(seq))
                top1[lo:hi] = logits_of(hidden[0, lo - 1 : hi - 1]).argmax(-1).cpu()
            out.append((logprobs[0].cpu(), top1))
        return out
