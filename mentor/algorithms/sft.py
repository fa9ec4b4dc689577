"""SFT / off-policy distillation: the tokens come from a dataset (or teacher samples), weight 1 each."""

from __future__ import annotations

import time

import torch

from mentor.data.prompts import EncodedExample
from mentor.rollout import RolloutBatch, right_pad
from mentor.update.logprobs import PolicyOutput
from mentor.update.losses import carries_signal, cross_entropy_loss


class SupervisedFineTuning:
    name = "sft"
    on_policy = False  # dropout stays on in the update; no sample log (the tokens are the data's)
    temperature = 1.0

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def collect(self, examples: list[EncodedExample]) -> tuple[RolloutBatch, dict[str, float]]:
        t0 = time.perf_counter()
        sequences = [e.prompt_ids + e.completion_ids for e in examples]
        input_ids, attention_mask = right_pad(sequences, self.pad_id)
        loss_mask = torch.zeros(input_ids.shape, dtype=torch.float32)
        for i, e in enumerate(examples):
            loss_mask[i, len(e.prompt_ids) : len(e.prompt_ids) + len(e.completion_ids)] = 1.0
        batch = RolloutBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            loss_mask=loss_mask,
            sampler_logprobs=torch.zeros_like(loss_mask),
            advantages=loss_mask.clone(),
            prompt_lengths=torch.tensor([len(e.prompt_ids) for e in examples]),
            group_ids=torch.arange(len(examples)),
        )
        return batch, {"completion_length": float(loss_mask.sum(1).mean()), "time_data": time.perf_counter() - t0}

    def forward_options(self, micro: RolloutBatch | None = None) -> dict:
        """What the policy forward computes for ``loss`` (keyword arguments of ``PolicyLogprobs.forward``)."""
        return {"temperature": self.temperature, "with_entropy": True}

    def carries_signal(self, batch: RolloutBatch) -> bool:
        return carries_signal(batch.advantages, batch.loss_mask)

    def loss(self, output: PolicyOutput, micro: RolloutBatch, num_tokens: int) -> tuple[torch.Tensor, dict]:
        """Negative log-likelihood of the completion tokens, summed and divided by the step's ``num_tokens``."""
        return cross_entropy_loss(output.logprobs, micro.loss_mask, num_tokens), {}
