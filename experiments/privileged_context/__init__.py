"""Issue 22 part 1: privileged-context self-distillation vs mid-training on SmolLM2-135M-Instruct (``mentor bench privileged``)."""
