"""Build a standard transformers MoE from a dense base and its FFN experts (CoE step 3).

Each block's MLP becomes E experts (the experts' MLPs, or untrained copies of the base MLP for the
MoE-from-copies ablation) plus a new bias-free router Linear(hidden -> E) drawn from normal(0, 0.02);
routing is softmax -> top-k -> renormalise (Mixtral's, and Qwen3-MoE's with ``norm_topk_prob``).
Attention and norms must be identical across experts (stage 1 froze them: asserted here); embeddings and
the LM head are averaged (only new special tokens' rows may differ). The output is Mixtral for
Llama/Mistral bases and Qwen3-MoE for Qwen3 bases, saved by transformers in the per-expert checkpoint
layout (``experts.0.w1.weight`` / ``experts.0.gate_proj.weight``), which vLLM and ``from_pretrained`` read.
Its ``config.json`` and ``tokenizer_config.json`` also carry the names transformers 4.x and vLLM read
(``rope_theta``, ``rope_scaling``, ``torch_dtype``, Qwen3-MoE's ``num_experts``, a tokenizer class 4.x knows):
the same logits under transformers 4.57 and 5.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from mentor.errors import MentorError

MLP_NAMES = ("gate_proj", "up_proj", "down_proj")
MOE_FAMILY = {"llama": "mixtral", "mistral": "mixtral", "qwen3": "qwen3_moe"}
ROUTER_INIT_STD = 0.02


def moe_config(base_config, num_experts: int, top_k: int):
    """The MoE config carrying the base's shapes, rope settings, norms, special tokens and tying."""
    from transformers import MixtralConfig, Qwen3MoeConfig

    arch = base_config.model_type
    if arch not in MOE_FAMILY:
        raise MentorError(
            f"cannot build a CoE MoE from a {arch!r} base: supported bases are "
            f"{', '.join(sorted(MOE_FAMILY))} (Mixtral or Qwen3-MoE output)"
        )
    if not 1 <= top_k <= num_experts:
        raise MentorError(f"--top-k must be between 1 and the number of experts ({num_experts}), got {top_k}")
    if getattr(base_config, "hidden_act", "silu") != "silu":
        raise MentorError(f"the base uses {base_config.hidden_act!r} activations; Mixtral/Qwen3-MoE experts use silu")
    shared = dict(
        vocab_size=base_config.vocab_size,
        hidden_size=base_config.hidden_size,
        num_hidden_layers=base_config.num_hidden_layers,
        num_attention_heads=base_config.num_attention_heads,
        num_key_value_heads=base_config.num_key_value_heads,
        head_dim=getattr(base_config, "head_dim", None) or base_config.hidden_size // base_config.num_attention_heads,
        hidden_act="silu",
        max_position_embeddings=base_config.max_position_embeddings,
        rms_norm_eps=base_config.rms_norm_eps,
        rope_parameters=dict(base_config.rope_parameters),
        tie_word_embeddings=base_config.tie_word_embeddings,
        attention_dropout=base_config.attention_dropout,
        bos_token_id=base_config.bos_token_id,
        eos_token_id=base_config.eos_token_id,
        pad_token_id=base_config.pad_token_id,
        initializer_range=ROUTER_INIT_STD,
        num_experts_per_tok=top_k,
        output_router_logits=False,
    )
    if MOE_FAMILY[arch] == "mixtral":
        if getattr(base_config, "attention_bias", False) or getattr(base_config, "mlp_bias", False):
            raise MentorError("the base has attention or MLP biases, which Mixtral has no place for")
        return MixtralConfig(
            intermediate_size=base_config.intermediate_size,
            num_local_experts=num_experts,
            sliding_window=getattr(base_config, "sliding_window", None),
            router_jitter_noise=0.0,
            **shared,
        )
    return Qwen3MoeConfig(
        moe_intermediate_size=base_config.intermediate_size,
        intermediate_size=base_config.intermediate_size,
        num_experts=num_experts,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        attention_bias=base_config.attention_bias,
        use_sliding_window=getattr(base_config, "use_sliding_window", False),
        sliding_window=getattr(base_config, "sliding_window", None),
        max_window_layers=getattr(base_config, "max_window_layers", base_config.num_hidden_layers),
        **shared,
    )


def _is_mlp(name: str) -> bool:
    return ".mlp." in name


def _check_shared_weights(base: dict, experts: list[dict]) -> None:
    """Stage 1 trains only MLPs (and new tokens' embedding rows): every other tensor must equal the base's."""
    for name, tensor in base.items():
        if _is_mlp(name) or "embed_tokens" in name or "lm_head" in name:
            continue
        for i, expert in enumerate(experts):
            if not torch.equal(expert[name], tensor):
                raise MentorError(
                    f"expert {i} differs from the base in {name}: experts must be trained with "
                    "only FFN parameters trainable (mentor coe train-experts)"
                )


@torch.no_grad()
def assemble_moe(
    base: nn.Module,
    experts: list[nn.Module] | None = None,
    num_experts: int | None = None,
    top_k: int = 2,
    seed: int = 0,
) -> nn.Module:
    """A transformers MoE model whose expert i in every layer is ``experts[i]``'s MLP.

    ``experts=None`` builds ``num_experts`` untrained copies of the base MLP (the MoE-from-copies ablation).
    """
    from transformers import AutoModelForCausalLM

    base_state = base.state_dict()
    expert_states = [e.state_dict() for e in experts] if experts else [base_state] * (num_experts or 0)
    if not expert_states:
        raise MentorError("assembling an MoE needs at least one expert")
    if experts:
        _check_shared_weights(base_state, expert_states)
    config = moe_config(base.config, len(expert_states), top_k)
    torch.manual_seed(seed)  # the routers' normal(0, 0.02) draw
    moe = AutoModelForCausalLM.from_config(config, dtype=next(base.parameters()).dtype)
    moe_state = moe.state_dict()
    filled = set()
    for name, tensor in base_state.items():
        if _is_mlp(name):
            continue
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            tensor = torch.stack([s[name] for s in expert_states]).mean(0)
        moe_state[name].copy_(tensor)
        filled.add(name)
    for layer in range(config.num_hidden_layers):
        prefix = f"model.layers.{layer}.mlp"
        gate_up, down = moe_state[f"{prefix}.experts.gate_up_proj"], moe_state[f"{prefix}.experts.down_proj"]
        for e, state in enumerate(expert_states):
            gate_up[e].copy_(torch.cat([state[f"{prefix}.gate_proj.weight"], state[f"{prefix}.up_proj.weight"]]))
            down[e].copy_(state[f"{prefix}.down_proj.weight"])
        filled |= {f"{prefix}.experts.gate_up_proj", f"{prefix}.experts.down_proj", f"{prefix}.gate.weight"}
    missing = [n for n in moe_state if n not in filled and not (n == "lm_head.weight" and config.tie_word_embeddings)]
    if missing:
        raise MentorError(
            f"assembly left {len(missing)} MoE tensors unset (e.g. {missing[0]}): unsupported base layout"
        )
    return moe


def save_moe(moe: nn.Module, tokenizer, path: str | Path) -> Path:
    from mentor.models.loading import save_pretrained

    return write_portable_config(save_pretrained(moe, tokenizer, path))


# tokenizer classes transformers 5 writes that older versions (and vLLM on them) do not know
NEW_TOKENIZER_CLASSES = {"TokenizersBackend": "PreTrainedTokenizerFast"}


def portable_config(config: dict) -> dict:
    """A transformers 5 MoE ``config.json`` plus the fields transformers 4.x and vLLM read instead.

    Transformers 5 writes ``rope_parameters``, ``dtype`` and (for Qwen3-MoE) ``num_local_experts``; 4.x reads
    ``rope_theta`` / ``rope_scaling``, ``torch_dtype`` and ``num_experts``, and silently falls back to its own
    defaults without them (Mixtral's rope_theta 1e6, Qwen3-MoE's 128 experts). Both sets are written, equal.
    """
    out = dict(config)
    rope = dict(config.get("rope_parameters") or {})
    if "rope_theta" in rope:
        out["rope_theta"] = rope["rope_theta"]
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    out["rope_scaling"] = None if scaling.get("rope_type", "default") == "default" else scaling
    if "dtype" in config:
        out["torch_dtype"] = config["dtype"]
    if config.get("model_type") == "qwen3_moe" and "num_local_experts" in config:
        out["num_experts"] = config["num_local_experts"]
    return out


def portable_tokenizer_config(config: dict) -> dict:
    """A transformers 5 ``tokenizer_config.json`` that transformers 4.x also loads (5 reads both spellings)."""
    out = dict(config)
    name = config.get("tokenizer_class")
    if name in NEW_TOKENIZER_CLASSES:
        out["tokenizer_class"] = NEW_TOKENIZER_CLASSES[name]
    if isinstance(config.get("extra_special_tokens"), list):  # 4.x wants a dict there; a list is its old name
        out["additional_special_tokens"] = out.pop("extra_special_tokens")
    return out


def write_portable_config(path: str | Path) -> Path:
    """Rewrite a saved MoE's ``config.json`` and ``tokenizer_config.json`` so transformers 4.x loads them."""
    path = Path(path)
    for name, convert in (("config.json", portable_config), ("tokenizer_config.json", portable_tokenizer_config)):
        file = path / name
        if file.exists():
            file.write_text(json.dumps(convert(json.loads(file.read_text())), indent=2, sort_keys=True) + "\n")
    return path


def mlp_parameter_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if _is_mlp(n)]
