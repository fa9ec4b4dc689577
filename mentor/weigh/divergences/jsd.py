"""``jsd``: TRL's generalized JSD with ``jsd_beta`` (0 forward ``KL(p || q)``, 1 reverse ``KL(q || p)`` as
``full``, between the interpolated JSD); the in-process teacher, chunked like ``full``."""

from __future__ import annotations

from mentor.rollout import RolloutBatch
from mentor.update.divergence import GeneralizedJSD, TeacherInputs
from mentor.update.logprobs import HiddenTerm
from mentor.weigh.divergences.full import Full


class JSD(Full):
    name = "jsd"
    term_metric = "generalized_jsd"

    def hidden_term(self, micro: RolloutBatch | None) -> HiddenTerm:
        inputs = TeacherInputs.of(micro) if micro is not None else None
        return GeneralizedJSD(self.model, self.options.jsd_beta, inputs)
