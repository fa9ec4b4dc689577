"""The policy's training forward: token log-probs (and any per-position term an algorithm asks for) in one
decoder pass, inside the DDP/FSDP wrapper. The chunked numerics it runs live in ``mentor.models.logprobs``."""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import nn

# the model numerics, also read here by the trainer, tests and benchmarks
from mentor.models.logprobs import (  # noqa: F401
    causal_lm_of,
    last_hidden_states,
    logprobs_from_hidden,
    naive_token_logprobs,
    token_logprobs,
)


class PolicyOutput(NamedTuple):
    """What the policy forward hands an algorithm's ``loss``.

    ``logprobs``: ``[B, T]`` float32 log-probs of the tokens (0 outside the asked-for positions);
    ``entropy``: ``[B, T]`` policy entropy there, or None when not asked for; ``term``: the per-position
    ``[B, T]`` tensor that the algorithm's ``hidden_term`` computed from the decoder's hidden states (e.g. a
    full-vocabulary reverse KL to an in-process teacher), or None.
    """

    logprobs: torch.Tensor
    entropy: torch.Tensor | None
    term: torch.Tensor | None


class HiddenTerm(Protocol):
    """A per-position term computed from the policy's last hidden states, inside the (DDP/FSDP) forward."""

    def __call__(
        self,
        model: nn.Module,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        wanted: torch.Tensor,
        temperature: float,
    ) -> torch.Tensor: ...


class PolicyLogprobs(nn.Module):
    """Wraps a causal LM so that its forward returns token log-probs (and what else an algorithm asks for).

    Distributed wrappers (DDP/FSDP via accelerate) wrap *this* module, so the chunked head and any
    ``hidden_term`` (a full-vocabulary loss term) run inside their forward and gradient sync/sharding see
    every parameter: every algorithm's loss stays correct when data-parallel.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids,
        attention_mask,
        positions=None,
        temperature: float = 1.0,
        with_entropy: bool = False,
        hidden_term: HiddenTerm | None = None,
    ) -> PolicyOutput:
        """``(log-probs, entropy or None, term or None)``, one decoder pass.

        ``term`` is ``hidden_term(...)`` on the same hidden states, e.g. a full-vocabulary divergence to a
        teacher (``mentor.update.divergence``), so it runs inside the DDP/FSDP forward.
        """
        hidden = last_hidden_states(self.model, input_ids, attention_mask)
        wanted = attention_mask.bool() if positions is None else positions.bool() & attention_mask.bool()
        logprobs, entropy = logprobs_from_hidden(
            self.model, hidden, input_ids, wanted, temperature=temperature, with_entropy=with_entropy
        )
        term = None
        if hidden_term is not None:
            term = hidden_term(self.model, hidden, input_ids, attention_mask, wanted, temperature)
        return PolicyOutput(logprobs, entropy, term)
