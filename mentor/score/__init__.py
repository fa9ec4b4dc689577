"""Score stage: who grades the tokens. Teachers return per-token log-probs; graders return rewards."""

from mentor.score.base import Teacher, score_with_teacher

__all__ = ["Teacher", "score_with_teacher"]
