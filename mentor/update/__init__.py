"""Update stage: per-token log-probs of the policy, the losses, the optimizer and its schedule."""
