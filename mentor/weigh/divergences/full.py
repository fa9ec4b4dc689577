"""``full``: the exact ``KL(q || p)`` over the whole vocabulary at each position, differentiated directly (TRL's
``DistillationTrainer`` with beta=1); the in-process teacher runs in the update, next to the student."""

from __future__ import annotations

from mentor.errors import MentorError
from mentor.rollout import RolloutBatch
from mentor.score.base import teacher_model
from mentor.update.divergence import FullReverseKL, TeacherInputs
from mentor.update.logprobs import HiddenTerm
from mentor.weigh.divergences.base import TEACHER_MODEL, Divergence


class Full(Divergence):
    name = "full"
    needs = TEACHER_MODEL

    def check_teacher(self) -> None:
        self.model = teacher_model(self.teacher)
        if self.model is None:  # DistillConfig refuses this before anything loads
            raise MentorError(
                f"divergence={self.name!r} needs a LocalTeacher's whole distribution, "
                f"not a {type(self.teacher).__name__}"
            )

    def hidden_term(self, micro: RolloutBatch | None) -> HiddenTerm:
        # with privileged context the teacher reads its own prompt + the micro-batch's completions
        inputs = TeacherInputs.of(micro) if micro is not None else None
        return FullReverseKL(self.model, teacher_inputs=inputs)
