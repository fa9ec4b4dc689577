"""Weigh stage: turn scores (teacher log-probs, rewards) into the student's per-token signal: additive advantages
(``advantages``) and OPD's divergences (``divergences``: a per-token advantage, or a per-position term the policy
forward computes against the teacher)."""
