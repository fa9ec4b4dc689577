"""OPD's divergences (``--divergence``): how the teacher's grades of the student's samples become its signal.

Each is one file here, a ``Divergence`` that declares what it needs from the teacher (``needs``: the sampled
tokens' log-probs, its top-k, or the in-process model) and provides its scoring step (``score``), its
in-forward term (``hidden_term``) and its loss term (``add_term``). Registering one is one entry in
``DIVERGENCES``: ``mentor.config`` validates ``--divergence`` against it, ``mentor.algorithms.opd`` runs it.
"""

from __future__ import annotations

from mentor.errors import MentorError
from mentor.weigh.divergences.base import TEACHER_LOGPROBS, TEACHER_MODEL, TEACHER_TOP_K, Divergence, DivergenceOptions
from mentor.weigh.divergences.full import Full
from mentor.weigh.divergences.jsd import JSD
from mentor.weigh.divergences.sampled import Sampled
from mentor.weigh.divergences.top_k import TopK

DIVERGENCES: dict[str, type[Divergence]] = {d.name: d for d in (Sampled, Full, TopK, JSD)}


def make_divergence(name: str, teacher, options: DivergenceOptions) -> Divergence:
    """The divergence ``name`` for ``teacher`` (refused in one line when unknown or the teacher cannot serve it)."""
    if name not in DIVERGENCES:
        raise MentorError(f"divergence {name!r} is unknown: use {', '.join(DIVERGENCES)}")
    return DIVERGENCES[name](teacher, options)


__all__ = [
    "DIVERGENCES",
    "TEACHER_LOGPROBS",
    "TEACHER_MODEL",
    "TEACHER_TOP_K",
    "Divergence",
    "DivergenceOptions",
    "make_divergence",
]
