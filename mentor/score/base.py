"""The teacher interface: one method, so a teacher can live in-process, on a server, or anywhere."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from mentor.rollout import RolloutBatch


class Teacher(Protocol):
    def compute_logprobs(self, sequences: list[list[int]], score_from: list[int] | None = None) -> list[torch.Tensor]:
        """For each token sequence, float32 ``[len(seq)]``: log p(x_t | x_<t); entry 0 is 0.

        ``score_from[i]`` is the first position whose log-prob is needed (the completion's start): entries
        before it may be returned as 0, so a teacher that can skip the prompt's LM head does less work.
        """


def teacher_model(teacher) -> nn.Module | None:
    """The teacher's model when it runs in this process (``LocalTeacher.model``): what a divergence over the whole
    vocabulary needs; None for a teacher elsewhere (a server) or several."""
    model = getattr(teacher, "model", None)
    return model if isinstance(model, nn.Module) else None


def score_with_teacher(teacher: Teacher, batch: RolloutBatch) -> torch.Tensor:
    """Teacher log-probs aligned with ``batch.input_ids`` (``[B, T]``, 0 outside real tokens).

    With privileged context (``batch.teacher_input_ids``) the teacher scores its own prompt followed by the
    completion, and only the completion's log-probs are kept, moved onto the student's positions."""
    sequences, starts = batch.teacher_sequences()
    scored = teacher.compute_logprobs(sequences, score_from=starts)
    out = torch.zeros((len(sequences), max(map(len, sequences), default=0)), dtype=torch.float32)
    for i, (sequence, logprobs) in enumerate(zip(sequences, scored)):
        if logprobs.shape[0] != len(sequence):
            raise RuntimeError(f"teacher returned {logprobs.shape[0]} log-probs for a {len(sequence)}-token sequence")
        out[i, : len(sequence)] = logprobs.float().cpu()
    if batch.teacher_input_ids is None:
        return torch.nn.functional.pad(out, (0, batch.input_ids.shape[1] - out.shape[1]))
    return batch.to_student_positions(out)
