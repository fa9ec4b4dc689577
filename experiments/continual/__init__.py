"""Experiment B on a real model: mid-training and OPD self-distillation (``mentor bench continual``)."""
