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
    def compute_logprobs(self, sequences: list[list[int]]) -> list[torch.Tensor]:
        device = next(self.model.parameters()).device
        out: list[torch.Tensor] = []
        for start in range(0, len(sequences), self.batch_size):
            chunk = sequences[start: start + self.batch_size]
            input_ids, attention_mask = right_pad(chunk, self.pad_id)
            logprobs, _ = token_logprobs(self.model, input_ids.to(device), attention_mask.to(device))
            out.extend(logprobs[i, : len(seq)].cpu() for i, seq in enumerate(chunk))
        return out
