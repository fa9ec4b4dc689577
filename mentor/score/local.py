"""A teacher that is a local transformers model: eval mode, no grad, float32 log-probs, chunked head."""

from __future__ import annotations

import torch
from torch import nn

from mentor.rollout import right_pad
from mentor.update.logprobs import token_logprobs


class LocalTeacher:
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
            chunk = sequences[start: start + self.batch_size]
            input_ids, attention_mask = right_pad(chunk, self.pad_id)
            # the LM head only runs where a log-prob is needed: prompts are context, not graded
            first = torch.tensor(score_from[start: start + self.batch_size]).unsqueeze(1)
            positions = torch.arange(input_ids.shape[1]).unsqueeze(0) >= first
            logprobs, _ = token_logprobs(self.model, input_ids.to(device), attention_mask.to(device),
                                         positions=positions.to(device))
            out.extend(logprobs[i, : len(seq)].cpu() for i, seq in enumerate(chunk))
        return out
