"""SFT / off-policy distillation: the tokens come from a dataset (or teacher samples), weight 1 each.

With ``logit_teacher`` (``--sft-loss forward_kl``) each completion position is instead weighed by the whole
teacher distribution: ``KL(p_teacher || q_student)`` over the vocabulary, the usual logit-distillation
baseline. Its expected gradient on teacher samples equals the cross-entropy's (``E_p[-log q] = H(p) + KL(p || q)``):
it is the Rao-Blackwellised form of SFT on teacher samples, as ``full`` is of OPD's ``sampled``.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from mentor.data.prompts import EncodedExample
from mentor.rollout import RolloutBatch, right_pad
from mentor.update.divergence import GeneralizedJSD
from mentor.update.logprobs import PolicyOutput
from mentor.update.losses import carries_signal, cross_entropy_loss


class SupervisedFineTuning:
    name = "sft"
    on_policy = False  # dropout stays on in the update; no sample log (the tokens are the data's)
    temperature = 1.0

    def __init__(self, pad_id: int, logit_teacher: nn.Module | None = None):
        self.pad_id = pad_id
        self.logit_teacher = logit_teacher  # in-process teacher of --sft-loss forward_kl

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
        metrics = {"completion_length": float(loss_mask.sum(1).mean()), "time_data": time.perf_counter() - t0}
        if self.logit_teacher is not None:  # the ledger counts the teacher's forward over every sequence
            metrics["teacher_tokens"] = float(attention_mask.sum())
        return batch, metrics

    def forward_options(self, micro: RolloutBatch | None = None) -> dict:
        """What the policy forward computes for ``loss`` (keyword arguments of ``PolicyLogprobs.forward``)."""
        options: dict = {"temperature": self.temperature, "with_entropy": True}
        if self.logit_teacher is not None:  # beta 0: the generalized JSD is the forward KL(teacher || student)
            options["hidden_term"] = GeneralizedJSD(self.logit_teacher, beta=0.0)
        return options

    def carries_signal(self, batch: RolloutBatch) -> bool:
        return carries_signal(batch.advantages, batch.loss_mask)

    def loss(self, output: PolicyOutput, micro: RolloutBatch, num_tokens: int) -> tuple[torch.Tensor, dict]:
        """Negative log-likelihood of the completion tokens (or, with a logit teacher, their forward KL), summed
        and divided by the step's ``num_tokens``."""
        if self.logit_teacher is None or output.term is None:
            return cross_entropy_loss(output.logprobs, micro.loss_mask, num_tokens), {}
        kl_sum = (output.term * micro.loss_mask).sum()
        nll = -(output.logprobs.detach() * micro.loss_mask).sum() / num_tokens
        return kl_sum / num_tokens, {"forward_kl": float(kl_sum.detach()) / num_tokens, "nll": float(nll)}
