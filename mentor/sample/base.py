"""The sampler interface: prompts in, completions and the log-prob of every sampled token out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from mentor.rollout import RolloutBatch, right_pad


@dataclass
class SampledBatch:
    """Completions as token lists (no padding), with the sampling policy's log-prob of each token."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]  # includes the EOS token when the model emitted one
    completion_logprobs: list[list[float]]
    truncated: list[bool]  # True when max_new_tokens cut the completion before EOS
    # multi-turn rollouts (mentor.sample.multi_turn): 1 on the student's tokens, 0 on the environment's (whose
    # log-probs are 0); the student's last turn, decoded (what graders read); turns taken; the environment's reward
    completion_mask: list[list[float]] | None = None
    answers: list[str] | None = None
    turns: list[int] | None = None
    env_rewards: list[float | None] | None = None


class Sampler(Protocol):
    def sample(self, prompt_ids: list[list[int]], greedy: bool = False) -> SampledBatch:
        """One completion per prompt (repeat a prompt to get a group); ``greedy`` for evaluation."""


def to_rollout_batch(
    sampled: SampledBatch, group_ids: list[int], pad_id: int, tokenizer=None, prompts: list[str] | None = None
) -> RolloutBatch:
    """Prompt + completion, right-padded; loss mask and sampler log-probs on the completion tokens."""
    sequences = [p + c for p, c in zip(sampled.prompt_ids, sampled.completion_ids)]
    input_ids, attention_mask = right_pad(sequences, pad_id)
    loss_mask = torch.zeros(input_ids.shape, dtype=torch.float32)
    sampler_logprobs = torch.zeros(input_ids.shape, dtype=torch.float32)
    for i, (p, c, lp) in enumerate(zip(sampled.prompt_ids, sampled.completion_ids, sampled.completion_logprobs)):
        loss_mask[i, len(p) : len(p) + len(c)] = (
            1.0 if sampled.completion_mask is None else torch.tensor(sampled.completion_mask[i], dtype=torch.float32)
        )
        sampler_logprobs[i, len(p) : len(p) + len(c)] = torch.tensor(lp, dtype=torch.float32)
    completions = []
    if sampled.answers is not None:
        completions = list(sampled.answers)
    elif tokenizer is not None:
        completions = tokenizer.batch_decode(sampled.completion_ids, skip_special_tokens=True)
    return RolloutBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        loss_mask=loss_mask,
        sampler_logprobs=sampler_logprobs,
        advantages=torch.zeros_like(sampler_logprobs),
        prompt_lengths=torch.tensor([len(p) for p in sampled.prompt_ids]),
        group_ids=torch.tensor(group_ids),
        truncated=torch.tensor(sampled.truncated),
        completions=completions,
        prompts=prompts or [],
    )


def sample_groups(sampler: Sampler, tokenizer, examples: list, group_size: int) -> tuple[RolloutBatch, list]:
    """The on-policy sample stage shared by RL and OPD: ``group_size`` completions per prompt.

    Returns the rollout batch and the examples repeated to line up with its rows (for graders and sources).
    """
    repeated = [e for e in examples for _ in range(group_size)]
    group_ids = [i for i in range(len(examples)) for _ in range(group_size)]
    if hasattr(sampler, "sample_examples"):  # multi-turn (--env): the environment renders the prompts
        sampled = sampler.sample_examples(repeated)
    else:
        sampled = sampler.sample([e.prompt_ids for e in repeated])
    batch = to_rollout_batch(sampled, group_ids, tokenizer.pad_token_id, tokenizer, [e.text for e in repeated])
    return batch, repeated
