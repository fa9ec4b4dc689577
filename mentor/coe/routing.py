"""Stage 2 of CoE: SFT on the union of the categories plus a routing loss on the routers' raw logits.

    margin: L = mean over layers, completion tokens of max(0, -(logit[label] - kth_largest_logit))
    ce:     L = mean over layers, completion tokens of cross_entropy(logits, label)

The margin loss is zero as soon as the labelled expert is in the top-k (ties included), so the router
stays free to choose the other slot(s). Logits are recorded with forward hooks on the model's own router
class (the one transformers' ``OutputRecorder`` declares for ``router_logits``), during the same forward
pass the trainer runs for the next-token loss: no second forward, no custom model class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mentor.algorithms.sft import SupervisedFineTuning
from mentor.data.prompts import EncodedExample
from mentor.errors import MentorError
from mentor.rollout import RolloutBatch
from mentor.update.logprobs import PolicyOutput

ROUTER_LOSSES = ("margin", "ce", "none")


def routing_loss_per_token(logits: torch.Tensor, labels: torch.Tensor, top_k: int, kind: str) -> torch.Tensor:
    """``[..., E]`` float logits and ``[...]`` expert labels -> ``[...]`` per-token loss (float32)."""
    logits = logits.float()
    if kind == "margin":
        kth_largest = logits.topk(top_k, dim=-1).values[..., -1]
        labelled = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        return torch.relu(kth_largest - labelled)  # = max(0, -(C - K_th))
    if kind == "ce":
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none").reshape(
            labels.shape
        )
    raise MentorError(f"--router-loss {kind!r} is unknown: use {', '.join(ROUTER_LOSSES)}")


def routing_loss(
    layer_logits: list[torch.Tensor],
    labels: torch.Tensor,
    mask: torch.Tensor,
    top_k: int,
    kind: str,
    num_tokens: int | None = None,
) -> torch.Tensor:
    """Per-layer loss over masked tokens, averaged over layers.

    ``layer_logits``: one ``[B*T, E]`` (or ``[B, T, E]``) tensor per MoE layer; ``labels``: ``[B]`` expert
    index per sequence; ``mask``: ``[B, T]`` tokens to average over. ``num_tokens`` divides the token sum
    (the trainer passes the whole optimizer step's count so micro-batches accumulate to a mean).
    """
    batch, length = mask.shape
    token_labels = labels.view(batch, 1).expand(batch, length)
    denominator = max(num_tokens if num_tokens is not None else float(mask.sum()), 1)
    per_layer = [
        (routing_loss_per_token(logits.view(batch, length, -1), token_labels, top_k, kind) * mask).sum()
        for logits in layer_logits
    ]
    return torch.stack(per_layer).mean() / denominator


def router_class(model: nn.Module) -> type:
    """The router module class a transformers MoE declares for ``router_logits`` (Mixtral, Qwen3-MoE, ...)."""
    for module in model.modules():
        recorders = getattr(type(module), "_can_record_outputs", None) or {}
        recorder = recorders.get("router_logits")
        if recorder is not None:
            return recorder.target_class
    raise MentorError(f"{type(model).__name__} exposes no router logits: routing losses need a transformers MoE")


class RouterLogitsRecorder:
    """Keeps the raw router logits of every MoE layer from the model's most recent forward pass."""

    def __init__(self, model: nn.Module):
        cls = router_class(model)
        self.routers = [m for m in model.modules() if isinstance(m, cls)]
        self.logits: list[torch.Tensor] = []
        self._handles = [r.register_forward_pre_hook(self._start) for r in self.routers[:1]]
        self._handles += [r.register_forward_hook(self._record) for r in self.routers]

    def _start(self, module, args) -> None:
        self.logits = []  # the first router of a forward pass starts a new record

    def _record(self, module, args, output) -> None:
        self.logits.append(output[0])

    def take(self) -> list[torch.Tensor]:
        logits, self.logits = self.logits, []
        return logits

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class CoEExpertUtilization(SupervisedFineTuning):
    """SFT whose batches carry each sequence's category; its loss is SFT's plus the routing loss."""

    name = "coe"

    def __init__(
        self, pad_id: int, model: nn.Module, top_k: int, router_loss: str = "margin", router_loss_coef: float = 1.0
    ):
        super().__init__(pad_id)
        if router_loss not in ROUTER_LOSSES:
            raise MentorError(f"--router-loss {router_loss!r} is unknown: use {', '.join(ROUTER_LOSSES)}")
        self.top_k, self.router_loss, self.coef = top_k, router_loss, router_loss_coef
        self.recorder = RouterLogitsRecorder(model)

    def collect(self, examples: list[EncodedExample]) -> tuple[RolloutBatch, dict[str, float]]:
        batch, metrics = super().collect(examples)
        batch.categories = torch.tensor([e.reference for e in examples], dtype=torch.long)
        return batch, metrics

    def loss(self, output: PolicyOutput, micro: RolloutBatch, num_tokens: int) -> tuple[torch.Tensor, dict]:
        """The next-token loss plus the routing loss on the router logits of the same forward pass."""
        loss, metrics = super().loss(output, micro, num_tokens)
        extra, extra_metrics = self.auxiliary_loss(micro, num_tokens)
        return loss + extra, {**metrics, **extra_metrics}

    def auxiliary_loss(self, micro: RolloutBatch, num_tokens: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The routing loss of ``micro``, right after the policy forward of it: the routers just ran on it."""
        logits = self.recorder.take()
        if self.router_loss == "none" or not logits:
            return torch.zeros(()), {}
        loss = routing_loss(
            logits,
            micro.categories.to(micro.loss_mask.device),
            micro.loss_mask,
            self.top_k,
            self.router_loss,
            num_tokens,
        )
        return self.coef * loss, {"router_loss": float(loss.detach())}
