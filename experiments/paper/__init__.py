"""Experiments A1, A2, B and C of the on-policy distillation post on tiny models (``mentor bench paper``)."""
