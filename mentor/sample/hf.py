"""Sampling with transformers ``generate`` (KV cache), recording the exact log-prob of each sampled token.

The log-probs are those of the distribution the token was drawn from: the model's softmax at the sampling
temperature, nothing else. The model's own ``generation_config`` (repetition penalty, min length, suppressed
tokens, ...) is set aside while sampling: its processors would change the draw but not the trainer's
log-probs. Top-k / top-p are for evaluation only (training refuses them for the same reason). A completion
ends at any of the model's end-of-turn tokens (``mentor.models.chat.stop_token_ids``).
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from mentor.models.chat import stop_token_ids
from mentor.models.logprobs import causal_lm_of
from mentor.sample.base import SampledBatch


class HFSampler:
    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        batch_size: int = 64,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.top_k, self.top_p, self.batch_size = top_k, top_p, batch_size
        self.stop_ids = stop_token_ids(tokenizer, model)

    def _generation_config(self):
        from transformers import GenerationConfig

        # always greedy over the scores: when sampling, SampleAndRecord has already drawn the token
        return GenerationConfig(
            do_sample=False,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            use_cache=True,
            return_dict_in_generate=True,
        )

    @torch.no_grad()
    def sample(self, prompt_ids: list[list[int]], greedy: bool = False) -> SampledBatch:
        out = SampledBatch([], [], [], [])
        for start in range(0, len(prompt_ids), self.batch_size):
            self._sample_chunk(prompt_ids[start : start + self.batch_size], greedy, out)
        return out

    def _sample_chunk(self, prompts: list[list[int]], greedy: bool, out: SampledBatch) -> None:
        model = self.model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        # generate wants left padding so every row's next token is at the same position
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.tensor(p)
            attention_mask[i, width - len(p) :] = 1
        from transformers import LogitsProcessorList

        recorder = None if greedy else SampleAndRecord(self.temperature, self.top_k, self.top_p)
        with neutral_generation_config(model):
            result = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=self._generation_config(),
                logits_processor=LogitsProcessorList([recorder] if recorder else []),
            )
        if was_training:
            model.train()
        generated = result.sequences[:, width:].cpu()
        if greedy:
            logprobs = torch.zeros(generated.shape)
        else:
            logprobs = torch.stack(recorder.logprobs, dim=1).cpu()[:, : generated.shape[1]]
        for i, prompt in enumerate(prompts):
            tokens = generated[i].tolist()
            end = next((t + 1 for t, token in enumerate(tokens) if token in self.stop_ids), None)
            out.prompt_ids.append(list(prompt))
            out.completion_ids.append(tokens[:end])
            out.completion_logprobs.append(logprobs[i, : len(tokens[:end])].tolist())
            out.truncated.append(end is None)


@contextlib.contextmanager
def neutral_generation_config(model: nn.Module):
    """Hide the model's ``generation_config`` from ``generate`` while mentor samples.

    ``generate`` fills every field the caller left unset from the model's config, so a checkpoint's
    ``repetition_penalty`` or ``suppress_tokens`` would add logits processors before the recorded draw.
    """
    from transformers import GenerationConfig

    target = causal_lm_of(model)  # a peft wrapper's generate runs the base model's
    saved = target.generation_config
    target.generation_config = GenerationConfig()
    try:
        yield
    finally:
        target.generation_config = saved


class SampleAndRecord:
    """A logits processor that draws the next token itself and records its log-prob.

    It returns scores that are -inf except at the drawn token, so ``generate`` runs its cheap greedy path.
    Why not ``do_sample=True`` + ``output_scores``: at a 150k vocabulary, CPU ``torch.multinomial`` costs
    ~4x the inverse-CDF draw below, and ``output_scores`` keeps (steps x batch x vocab) float scores alive
    only to read one entry per row; here one (batch x vocab) row block lives at a time.
    """

    def __init__(self, temperature: float, top_k: int = 0, top_p: float = 1.0):
        from transformers import TopKLogitsWarper, TopPLogitsWarper

        self.temperature = temperature
        self.warpers = ([TopKLogitsWarper(top_k)] if top_k > 0 else []) + (
            [TopPLogitsWarper(top_p)] if top_p < 1.0 else []
        )
        self.logprobs: list[torch.Tensor] = []  # [B] per step: log q(token) under the sampling distribution

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float()
        if self.temperature != 1.0:
            scores = scores / self.temperature
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        # one pass for the max, one for exp, one for the running sum (logsumexp would add a second exp pass)
        top = scores.amax(dim=-1, keepdim=True)
        cdf = (scores - top).exp_().cumsum_(-1)  # unnormalised: the last entry is the total mass, >= 1
        total = cdf[:, -1:]
        # u in (0, total]: the left search lands on the first token whose mass covers u, never a 0-mass one.
        # float32 sums are exact enough: each token's interval is off by one rounding (~1e-7 of the mass).
        u = (1.0 - torch.rand(cdf.shape[0], 1, device=cdf.device)) * total
        tokens = torch.searchsorted(cdf, u).clamp_(max=cdf.shape[-1] - 1)
        self.logprobs.append((scores.gather(-1, tokens) - top - total.log()).squeeze(-1))
        # +inf at the drawn token (all else is finite or -inf): generate's argmax picks it, no new tensor
        return scores.scatter_(-1, tokens, math.inf)
