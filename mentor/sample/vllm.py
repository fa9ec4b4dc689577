"""Sampling with a colocated vLLM engine (``pip install mentor[vllm]``, needs a GPU).

The engine lives in the training process and shares the GPU (``gpu_memory_utilization`` caps its share).
Before each ``sample`` call the trainer's current weights are pushed into it (LoRA adapters merged first),
so rollouts always come from the policy being trained. vLLM reports the log-prob of each sampled token;
``logprobs_mode="processed_logprobs"`` makes that the log-prob under the distribution the token was
actually drawn from (temperature, top-k and top-p applied), which is what the importance ratio needs.

vLLM runs its engine core in-process here (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so ``load_weights`` can
be handed the trainer's tensors directly instead of serialising them to another process.

Every vLLM call below was checked against vLLM 0.33.0 (commit 4ba787ec9, the wheel's source):
``LLM.__init__`` (vllm/entrypoints/llm.py; ``max_model_len``, ``enable_prefix_caching`` and ``logprobs_mode``
go through ``**kwargs`` to ``EngineArgs``), ``SamplingParams`` (vllm/sampling_params.py: ``top_k`` 0 disables,
temperature 0 is greedy and resets top-k/top-p in ``__post_init__``), ``LLM.generate(prompts, params, *,
use_tqdm)``, ``vllm.inputs.TokensPrompt(prompt_token_ids=...)``, ``CompletionOutput.token_ids / .logprobs /
.finish_reason`` (vllm/outputs.py; ``logprobs`` a list of ``{token_id: Logprob}``, one per sampled token,
since ``flat_logprobs`` stays off), ``LLM.apply_model`` (runs ``fn(worker.get_model())`` through
``collective_rpc``: in this process only with multiprocessing off), ``Qwen3ForCausalLM.load_weights(iterable of
(HF name, tensor))``, ``LLM.reset_prefix_cache() -> bool``, ``ModelConfig.logprobs_mode``
("processed_logprobs": after temperature / top-k / top-p). No sleep/wake: the engine keeps its memory share.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch import nn

from mentor.errors import MentorError
from mentor.models.chat import stop_token_ids
from mentor.models.loading import is_peft
from mentor.sample.base import SampledBatch


class VLLMSampler:
    def __init__(self, model: nn.Module, tokenizer, model_path: str, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, *, dtype: str = "bfloat16", seed: int = 0,
                 gpu_memory_utilization: float = 0.3, max_model_len: int | None = None,
                 enable_prefix_caching: bool = True):
        if not torch.cuda.is_available():
            raise MentorError("--sampler vllm needs a CUDA GPU; use --sampler hf on this machine")
        # forced, not defaulted: with a separate engine process apply_model would have to pickle the closure
        # and the trainer's tensors; read when LLM() builds its engine (vllm/v1/engine/llm_engine.py)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise MentorError("--sampler vllm needs vLLM: pip install 'mentor[vllm]'") from None
        self.model, self.tokenizer = model, tokenizer
        # dtype as given: vLLM's "auto" turns a float32 checkpoint into bfloat16 (_resolve_auto_dtype), which
        # would make the sampler's log-probs those of another model than the float32 trainer's
        self.llm = LLM(model=model_path, tokenizer=model_path, dtype=dtype, seed=seed,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                       enable_prefix_caching=enable_prefix_caching, logprobs_mode="processed_logprobs")
        stop = stop_token_ids(tokenizer, model)
        # logprobs=0: vLLM returns exactly the sampled token's log-prob at each step
        self.params = SamplingParams(n=1, max_tokens=max_new_tokens, temperature=temperature, top_k=max(top_k, 0),
                                     top_p=top_p, logprobs=0, stop_token_ids=stop)
        # built, not cloned and edited: __post_init__ makes temperature 0 greedy (and sampling_type is cached)
        self.greedy_params = SamplingParams(n=1, max_tokens=max_new_tokens, temperature=0.0, stop_token_ids=stop)
        self._synced_version: int | None = None

    # --- weights --------------------------------------------------------------------------------------
    def sync_weights(self) -> None:
        """Copy the trainer's weights into the engine and drop KV blocks cached under the old ones."""
        weights = dict(_named_weights(self.model))
        self.llm.apply_model(lambda engine_model: engine_model.load_weights(weights.items()))
        if not self.llm.reset_prefix_cache():  # False while requests run: their blocks hold the old weights
            raise RuntimeError("vLLM did not reset its prefix cache after a weight sync")

    def _weights_version(self) -> int:
        """Changes whenever an optimizer step has written to the parameters (torch bumps tensor versions)."""
        return sum(p._version for p in self.model.parameters() if p.requires_grad)

    # --- the Sampler interface ------------------------------------------------------------------------
    def sample(self, prompt_ids: list[list[int]], greedy: bool = False) -> SampledBatch:
        from vllm.inputs import TokensPrompt

        version = self._weights_version()
        if version != self._synced_version:  # the first call too: the model may be LoRA-wrapped or trained
            self.sync_weights()
            self._synced_version = version
        params = self.greedy_params if greedy else self.params
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids], params,
                                    use_tqdm=False)
        out = SampledBatch([], [], [], [])
        for prompt, request in zip(prompt_ids, outputs):
            completion = request.outputs[0]
            tokens = list(completion.token_ids)
            if greedy:
                logprobs = [0.0] * len(tokens)
            else:
                logprobs = [step[t].logprob for t, step in zip(tokens, completion.logprobs)]
            out.prompt_ids.append(list(prompt))
            out.completion_ids.append(tokens)
            out.completion_logprobs.append(logprobs)
            out.truncated.append(completion.finish_reason == "length")
        return out


def _named_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Plain transformers parameter names and tensors; a LoRA model's adapters are merged in first."""
    if is_peft(model):
        # merge, copy out, unmerge: the trainer keeps training the adapter, vLLM sees the merged weights
        model.merge_adapter()
        try:
            base = model.get_base_model()
            state = {name.replace(".base_layer", ""): tensor.detach().clone()
                     for name, tensor in base.state_dict().items() if "lora_" not in name}
        finally:
            model.unmerge_adapter()
        yield from state.items()
        return
    for name, tensor in model.state_dict().items():
        yield name, tensor.detach()
