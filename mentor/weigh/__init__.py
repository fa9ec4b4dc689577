"""Weigh stage: turn scores (teacher log-probs, rewards) into a per-token advantage."""
