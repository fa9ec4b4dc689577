"""One teacher per data set (``--teacher name=SPEC,name=SPEC``), with the teachers it dispatches to."""

from __future__ import annotations

import torch

from mentor.rollout import RolloutBatch
from mentor.score.base import Teacher, score_with_teacher


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


def score_by_source(
    teacher: Teacher | TeacherPerSource, batch: RolloutBatch, sources: list[str]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Teacher log-probs for every row of ``batch`` (``sources``: each row's data set), and the FLOPs one teacher
    per data set spent (``teacher_flops``; a single teacher's are counted by the trainer)."""
    if isinstance(teacher, TeacherPerSource):
        logprobs, flops = teacher.score(batch, sources)
        return logprobs, {"teacher_flops": flops}
    return score_with_teacher(teacher, batch), {}
