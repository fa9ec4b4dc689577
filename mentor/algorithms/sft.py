"""SFT / off-policy distillation: the tokens come from a dataset (or teacher samples), weight 1 each."""

from __future__ import annotations

import time

import torch

from mentor.data.prompts import EncodedExample
from mentor.rollout import RolloutBatch, right_pad


class SupervisedFineTuning:
    name = "sft"
    loss = "cross_entropy"
    temperature = 1.0

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def collect(self, examples: list[EncodedExample]) -> tuple[RolloutBatch, dict[str, float]]:
        t0 = time.perf_counter()
        sequences = [e.prompt_ids + e.completion_ids for e in examples]
        input_ids, attention_mask = right_pad(sequences, self.pad_id)
        loss_mask = torch.zeros(input_ids.shape, dtype=torch.float32)
        for i, e in enumerate(examples):
            loss_mask[i, len(e.prompt_ids): len(e.prompt_ids) + len(e.completion_ids)] = 1.0
        batch = RolloutBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask,
                             sampler_logprobs=torch.zeros_like(loss_mask), advantages=loss_mask.clone(),
                             prompt_lengths=torch.tensor([len(e.prompt_ids) for e in examples]),
                             group_ids=torch.arange(len(examples)))
        return batch, {"completion_length": float(loss_mask.sum(1).mean()), "time_data": time.perf_counter() - t0}
