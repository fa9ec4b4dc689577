"""Tiny models from real architectures and a character tokenizer built with ``tokenizers``.

Used by the demo and the tests: they are saved and reloaded through the same
``AutoModelForCausalLM`` / ``AutoTokenizer`` code path a user's model takes.
"""

from __future__ import annotations

from pathlib import Path

import torch

# Characters of the built-in tasks; the tokenizer maps each to one token.
DEFAULT_ALPHABET = "0123456789+-*/=;()., abcdefghijklmnopqrstuvwxyz?:"
SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}"
    "{{ eos_token }}{% else %}<|user|>{{ m['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_char_tokenizer(alphabet: str = DEFAULT_ALPHABET, chat_template: str | None = CHAT_TEMPLATE):
    """A character-level ``PreTrainedTokenizerFast`` (BOS prepended, EOS/PAD defined, optional chat template)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<pad>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def tiny_config(
    arch: str,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int | None = None,
    max_positions: int = 256,
    tokenizer=None,
):
    """A real transformers config (Qwen3 or Llama family) at toy scale."""
    from transformers import AutoConfig

    head_dim = hidden_size // num_heads
    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        head_dim=head_dim,
        intermediate_size=intermediate_size or 3 * hidden_size,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
    )
    if tokenizer is not None:
        kwargs.update(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    if arch not in ("qwen3", "llama", "mistral", "qwen2"):
        raise ValueError(f"no tiny config for architecture {arch!r}")
    return AutoConfig.for_model(arch, **kwargs)


def build_tiny_model(config, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def save_tiny(model, tokenizer, path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
