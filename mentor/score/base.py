"""The teacher interface: one method, so a teacher can live in-process, on a server, or anywhere."""

from __future__ import annotations

from typing import Protocol

import torch

from mentor.rollout import RolloutBatch


class Teacher(Protocol):
    def compute_logprobs(self, sequences: list[list[int]], score_from: list[int] | None = None) -> list[torch.Tensor]:
        """For each token sequence, float32 ``[len(seq)]``: log p(x_t | x_<t); entry 0 is 0.

        ``score_from[i]`` is the first position whose log-prob is needed (the completion's start): entries
        before it may be returned as 0, so a teacher that can skip the prompt's LM head does less work.
        """


def score_with_teacher(teacher: Teacher, batch: RolloutBatch) -> torch.Tensor:
    """Teacher log-probs aligned with ``batch.input_ids`` (``[B, T]``, 0 outside real tokens)."""
    lengths = batch.attention_mask.sum(1).tolist()
    sequences = [batch.input_ids[i, :n].tolist() for i, n in enumerate(lengths)]
    scored = teacher.compute_logprobs(sequences, score_from=batch.prompt_lengths.tolist())
    out = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
    for i, (n, logprobs) in enumerate(zip(lengths, scored)):
        if logprobs.shape[0] != n:
            raise RuntimeError(f"teacher returned {logprobs.shape[0]} log-probs for a {n}-token sequence")
        out[i, :n] = logprobs.float().cpu()
    return out
