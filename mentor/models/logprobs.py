"""Log-probs of given tokens without materialising a (batch x seq x vocab) float32 tensor.

The decoder runs once; the LM head, float32 log-softmax and the gather of the observed token run over
chunks of positions. Under autograd each chunk is recomputed in backward (activation checkpointing), so
peak memory is one chunk of logits instead of the whole sequence's.

These numerics read a causal LM and nothing else: the sampler, the teachers (``mentor.score``) and the policy's
training forward (``mentor.update.logprobs``) all build on them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Budget for one chunk of float32 logits (bytes). On a GPU 256 MiB (~440 rows of Qwen3's 151,936-token
# vocabulary) amortises re-reading the LM head weight for every chunk; on a CPU there is nothing to amortise
# and the RAM is shared, so chunks are 8x smaller.
CHUNK_BYTES = 256 * 2**20
CPU_CHUNK_BYTES = 32 * 2**20


def chunk_rows(vocab: int, device: torch.device, tensors: int = 1) -> int:
    """Positions per chunk so that ``tensors`` float32 (rows x vocab) tensors fit the device's budget."""
    budget = CHUNK_BYTES if device.type != "cpu" else CPU_CHUNK_BYTES
    return max(16, budget // (tensors * 4 * vocab))


def causal_lm_of(model: nn.Module) -> nn.Module:
    """The transformers CausalLM inside a peft wrapper (LoRA layers stay in place, so they still apply)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def head_fn(causal_lm: nn.Module, temperature: float):
    """``hidden -> float32 logits / temperature``, with the model's logit scale and soft-capping applied."""
    config = causal_lm.config
    head = causal_lm.get_output_embeddings()
    softcap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)  # Cohere multiplies its logits by a constant

    def logits_of(hidden: torch.Tensor) -> torch.Tensor:
        logits = head(hidden).float()
        if isinstance(scale, (int, float)):
            logits = logits * scale
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits / temperature if temperature != 1.0 else logits

    return logits_of


def _chunk_logprobs(logits_of, hidden: torch.Tensor, targets: torch.Tensor, entropy_out: list | None):
    """Gathered log-probs of one chunk; its entropy is appended to ``entropy_out`` when that list is empty.

    Under checkpointing this runs twice (forward, then again in backward to rebuild the graph). The entropy is
    a metric that no gradient flows through, so the second run finds the list filled and skips its two
    extra passes over the vocabulary.
    """
    logprobs_all = F.log_softmax(logits_of(hidden), dim=-1)
    token_logprobs = logprobs_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if entropy_out is not None and not entropy_out:
        with torch.no_grad():
            entropy_out.append(-(logprobs_all.exp() * logprobs_all).sum(-1))
    return token_logprobs


def token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    positions: torch.Tensor | None = None,
    with_entropy: bool = False,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of every token ``input_ids[b, t]`` given its prefix, as float32 ``[B, T]`` (0 at t=0).

    ``positions`` (bool ``[B, T]``) limits the work to the tokens that are needed (e.g. completions);
    other entries are 0. ``with_entropy`` also returns the policy entropy at those positions.
    """
    hidden = last_hidden_states(model, input_ids, attention_mask)
    wanted = attention_mask.bool() if positions is None else positions.bool() & attention_mask.bool()
    return logprobs_from_hidden(
        model, hidden, input_ids, wanted, temperature=temperature, with_entropy=with_entropy, chunk_size=chunk_size
    )


def last_hidden_states(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The decoder's final hidden states ``[B, T, H]`` (the LM head is applied later, in chunks)."""
    return causal_lm_of(model).get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def logprobs_from_hidden(
    model: nn.Module,
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    wanted: torch.Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``token_logprobs`` from precomputed hidden states, at the bool ``[B, T]`` positions ``wanted``."""
    causal_lm = causal_lm_of(model)
    wanted = wanted.bool().clone()
    wanted[:, 0] = False  # the first token has no prefix to predict it from
    # hidden state at t-1 predicts token t
    rows, cols = wanted.nonzero(as_tuple=True)
    flat_hidden = hidden[rows, cols - 1]
    flat_targets = input_ids[rows, cols]
    logits_of = head_fn(causal_lm, temperature)
    vocab = causal_lm.get_output_embeddings().weight.shape[0]
    chunk = chunk_size or chunk_rows(vocab, hidden.device)
    needs_grad = torch.is_grad_enabled() and flat_hidden.requires_grad
    pieces, entropies = [], []
    for start in range(0, flat_hidden.shape[0], chunk):
        h, y = flat_hidden[start : start + chunk], flat_targets[start : start + chunk]
        entropy_out: list | None = [] if with_entropy else None
        if needs_grad:
            pieces.append(checkpoint(_chunk_logprobs, logits_of, h, y, entropy_out, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(logits_of, h, y, entropy_out))
        if with_entropy:
            entropies.append(entropy_out[0])
    out = hidden.new_zeros(input_ids.shape, dtype=torch.float32)
    flat = torch.cat(pieces) if pieces else out.new_zeros(0)
    out = out.index_put((rows, cols), flat)
    entropy = None
    if with_entropy:
        entropy = out.new_zeros(input_ids.shape).detach()
        if pieces:
            entropy[rows, cols] = torch.cat(entropies)
    return out, entropy


def naive_token_logprobs(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Reference implementation: full logits, full float32 log-softmax. For tests and benchmarks."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float() / temperature
    logprobs = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    out[:, 1:] = logprobs * attention_mask[:, 1:]
    return out


def vocab_rows(model: nn.Module) -> int:
    """Rows of the model's LM head (its vocabulary, padding rows included)."""
    return causal_lm_of(model).get_output_embeddings().weight.shape[0]


def truncated_head(logits_of, vocab: int):
    """Heads padded past the shared vocabulary (common in checkpoints) are cut to it."""
    return lambda hidden: logits_of(hidden)[..., :vocab]
