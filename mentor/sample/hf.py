"""Sampling with transformers ``generate`` (KV cache), recording the exact log-prob of each sampled token.

The log-probs are those of the distribution the token was drawn from: temperature applied, and top-k /
top-p only if asked (they are off by default so the recorded q(x) is the full tempered softmax).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mentor.sample.base import SampledBatch


class HFSampler:
    def __init__(self, model: nn.Module, tokenizer, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, batch_size: int = 64):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.top_k, self.top_p, self.batch_size = top_k, top_p, batch_size

    def _generation_config(self, greedy: bool):
        from transformers import GenerationConfig

        common = dict(max_new_tokens=self.max_new_tokens, eos_token_id=self.tokenizer.eos_token_id,
                      pad_token_id=self.tokenizer.pad_token_id, use_cache=True,
                      return_dict_in_generate=True, output_scores=not greedy)
        if greedy:
            return GenerationConfig(do_sample=False, **common)
        return GenerationConfig(do_sample=True, temperature=self.temperature, top_k=self.top_k,
                                top_p=self.top_p, **common)

    @torch.no_grad()
    def sample(self, prompt_ids: list[list[int]], greedy: bool = False) -> SampledBatch:
        out = SampledBatch([], [], [], [])
        for start in range(0, len(prompt_ids), self.batch_size):
            self._sample_chunk(prompt_ids[start: start + self.batch_size], greedy, out)
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
            input_ids[i, width - len(p):] = torch.tensor(p)
            attention_mask[i, width - len(p):] = 1
        result = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                generation_config=self._generation_config(greedy))
        if was_training:
            model.train()
        generated = result.sequences[:, width:].cpu()
        if greedy:
            logprobs = torch.zeros(generated.shape)
        else:
            scores = torch.stack(result.scores, dim=1).float()  # [N, L, V] processed = sampling distribution
            logprobs = F.log_softmax(scores, dim=-1).gather(-1, generated.unsqueeze(-1).to(scores.device))
            logprobs = logprobs.squeeze(-1).cpu()
        eos = self.tokenizer.eos_token_id
        for i, prompt in enumerate(prompts):
            tokens = generated[i].tolist()
            end = tokens.index(eos) + 1 if eos in tokens else len(tokens)
            out.prompt_ids.append(list(prompt))
            out.completion_ids.append(tokens[:end])
            out.completion_logprobs.append(logprobs[i, :end].tolist())
            out.truncated.append(eos not in tokens[:end])
