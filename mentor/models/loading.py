"""Load any ``AutoModelForCausalLM`` + tokenizer, check vocabularies, wrap with LoRA, save for reuse."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from mentor.errors import MentorError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise MentorError(f"unknown dtype {name!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[name]


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")  # NAME or ORG/NAME


def looks_local(path: str) -> bool:
    """A path the user meant on this machine: never tried on the hub (a missing one fails at once, not after
    a minute of network retries). Hub ids are NAME or ORG/NAME; ``runs/x`` is local when ``./runs`` exists."""
    if path.startswith((".", "/", "~")) or "\\" in path or path.endswith("/") or not _HUB_ID.fullmatch(path):
        return True
    return "/" in path and Path(path.split("/")[0]).is_dir()


def _check_exists(path: str, what: str) -> None:
    if not isinstance(path, str) or not path.strip():
        raise MentorError(f"{what} is empty: pass a model directory, a .gguf file or a hub id")
    local = Path(path).expanduser()
    if looks_local(path) and not local.exists():
        raise MentorError(f"{what} {path!r} does not exist: pass a model directory, a .gguf file or a hub id")
    if local.is_dir() and not any(local.iterdir()):
        raise MentorError(f"{what} {path!r} is an empty directory: pass the directory a model was saved to")


def split_gguf(path: str) -> tuple[str, str | None]:
    """``DIR/model.gguf`` -> (``DIR``, ``model.gguf``); any other source -> (source, None).

    transformers reads a GGUF file as (directory or hub repo, ``gguf_file=`` name): weights dequantized,
    tokenizer, chat template and EOS from the file's metadata.
    """
    if not path.lower().endswith(".gguf"):
        return path, None
    file = Path(path).expanduser()
    if file.is_dir():
        raise MentorError(f"{path!r} is a directory, not a .gguf file: pass the file itself")
    return str(file.parent), file.name


def _source_kwargs(path: str, what: str) -> tuple[str, dict]:
    """``from_pretrained`` arguments for a model directory, hub id or GGUF file; checked before any work."""
    _check_exists(path, what)
    directory, gguf_file = split_gguf(path)
    if gguf_file is None:
        local = Path(path).expanduser()
        ggufs = sorted(local.glob("*.gguf")) if local.is_dir() and not (local / "config.json").exists() else []
        if ggufs:  # a llama.cpp / Ollama folder: transformers would fail on its missing tokenizer files
            raise MentorError(
                f"{what} {path!r} holds GGUF files, not a transformers model: pass the file itself, "
                f"e.g. {str(ggufs[0])!r}"
            )
        return path, {}
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise MentorError(
            f"{what} {path!r} is a GGUF file, which needs the gguf package: pip install 'mentor[gguf]'"
        ) from None
    return directory, {"gguf_file": gguf_file}


def load_tokenizer(path: str, what: str = "model"):
    from transformers import AutoTokenizer

    source, kwargs = _source_kwargs(path, what)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except Exception as exc:  # the tokenizers library raises bare Exceptions and KeyErrors on corrupt files
        raise MentorError(
            f"cannot load the {what} tokenizer from {path!r} ({_reason(exc)}): check its "
            "tokenizer files (tokenizer.json, tokenizer_config.json)"
        ) from None
    if tokenizer.pad_token_id is None:
        # generation and batching need a pad id; EOS is the common choice and is masked out anyway. It is
        # mentor's choice, not the model's: save_pretrained leaves it out of the saved tokenizer.
        tokenizer.pad_token = tokenizer.eos_token
        tokenizer.mentor_borrowed_pad = True
    return tokenizer


def load_model(path: str, dtype: str = "float32", device: str | torch.device = "cpu", what: str = "model") -> nn.Module:
    from transformers import AutoModelForCausalLM

    source, kwargs = _source_kwargs(path, what)
    if "gguf_file" in kwargs:
        kwargs.update(_dequantized(kwargs["gguf_file"]))
    local = Path(source).expanduser()
    if "gguf_file" not in kwargs and local.is_dir() and not (local / "config.json").is_file():
        raise MentorError(
            f"{what} {path!r} holds no config.json: pass the directory a model was saved to (config.json and weights)"
        )
    dtype_ = resolve_dtype(dtype)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(source, dtype=dtype_, output_loading_info=True, **kwargs)
    except Exception as exc:  # safetensors, json and torch raise their own types on corrupt or cut files
        raise MentorError(
            f"cannot load the {what} from {path!r} ({_reason(exc)}): check that its config.json and "
            "weight files are complete"
        ) from None
    if "gguf_file" not in kwargs:
        _check_loaded_weights(path, what, info)
    for name, tensor in model.state_dict().items():  # a damaged checkpoint must not train into a "result"
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise MentorError(
                f"the {what} {path!r} holds weights that are not finite ({name} has NaN or inf): "
                "the checkpoint is damaged; use another one"
            )
    return model.to(device)


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] + "...") if len(text) > 160 else text or type(exc).__name__


def _check_loaded_weights(path: str, what: str, info: dict) -> None:
    """Every tensor of the weights found its place in the architecture config.json names, and vice versa:
    a ``model_type`` that does not match the weights would otherwise drop or re-initialise tensors silently."""
    problems = [
        (kind, list(info.get(key) or []))
        for kind, key in (
            ("unused by the architecture", "unexpected_keys"),
            ("missing from the weights", "missing_keys"),
            ("of another shape", "mismatched_keys"),
        )
    ]
    problems = [(kind, keys) for kind, keys in problems if keys]
    if problems:
        kind, keys = problems[0]
        first = keys[0][0] if isinstance(keys[0], tuple) else keys[0]
        raise MentorError(
            f"the {what} {path!r} does not match its config.json: {len(keys)} tensors {kind} (e.g. "
            f"{first}): check model_type and the architecture in config.json"
        )


def _dequantized(gguf_file: str) -> dict:
    """Train a GGUF model as a plain dense one: weights unpacked at load, nothing left of the quantizer.

    Recent transformers may otherwise keep the blocks quantized (then neither trainable nor saveable);
    older ones always unpack and have no ``GgufConfig``.
    """
    try:
        from transformers.utils.quantization_config import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(gguf_file=gguf_file, dequantize=True)}


def check_same_vocabulary(student_tokenizer, teacher_tokenizer) -> None:
    """Token-level distillation compares log-probs of the same token ids: the vocabularies must match.

    Cheap (no weights): run it before any model loads.
    """
    if student_tokenizer is teacher_tokenizer:
        return
    s_vocab, t_vocab = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if s_vocab != t_vocab:
        differing = len(set(s_vocab.items()) ^ set(t_vocab.items()))
        raise MentorError(
            f"teacher and student tokenizers differ ({len(t_vocab)} vs {len(s_vocab)} tokens, {differing} "
            "entries differ): token-level distillation needs one vocabulary, so pick a teacher from the "
            "student's model family"
        )


def check_heads_cover_vocabulary(tokenizer, student_model: nn.Module, teacher_model: nn.Module) -> None:
    """After loading: both output layers have a row for every token of the (shared) vocabulary."""
    s_rows = student_model.get_output_embeddings().weight.shape[0]
    t_rows = teacher_model.get_output_embeddings().weight.shape[0]
    if min(s_rows, t_rows) < len(tokenizer):
        raise MentorError(
            f"a model's output layer ({s_rows} or {t_rows} rows) is smaller than its "
            f"tokenizer ({len(tokenizer)} tokens): the checkpoint and tokenizer do not belong together"
        )


def context_length(model: nn.Module) -> int | None:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def apply_lora(
    model: nn.Module, rank: int, alpha: float, target_modules: list[str] | str, dropout: float = 0.0
) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM"
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise MentorError(
            f"--lora-target-modules {target_modules if isinstance(target_modules, str) else ','.join(target_modules)} "
            f"matches no layer this model can adapt ({_reason(exc)[:80]}): use all-linear or some "
            f"of {','.join(names[:8])}"
        ) from None


def check_lora_targets(model: nn.Module, target_modules: list[str] | str) -> None:
    """``apply_lora``'s refusal of targets that match no layer, without building the adapter: what peft matches
    (``all-linear``; a string as a regex over whole module names; a list by name or name suffix)."""
    import re

    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if target_modules == "all-linear" or not names:
        return
    if isinstance(target_modules, str):
        matched = any(re.fullmatch(target_modules, name) for name in names)
    else:
        matched = any(name == t or name.endswith("." + t) for name in names for t in target_modules)
    if not matched:
        shown = target_modules if isinstance(target_modules, str) else ",".join(target_modules)
        short = sorted({name.rsplit(".", 1)[-1] for name in names})
        raise MentorError(
            f"--lora-target-modules {shown} matches no layer this model can adapt: use all-linear or some "
            f"of {','.join(short[:8])}"
        )


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def save_pretrained(model: nn.Module, tokenizer, path: str | Path, merge_lora: bool = True) -> Path:
    """Save so that ``AutoModelForCausalLM.from_pretrained(path)`` (and vLLM) load it.

    A LoRA model writes its adapter to ``path/adapter`` and a merged full model to ``path``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if is_peft(model):
        model.save_pretrained(path / "adapter")
        if merge_lora:
            import copy

            merged = copy.deepcopy(model).merge_and_unload()
            merged.save_pretrained(path, safe_serialization=True)
    else:
        model.save_pretrained(path, safe_serialization=True)
    if tokenizer is not None:
        _save_tokenizer(tokenizer, path)
    return path


def _save_tokenizer(tokenizer, path: Path) -> None:
    """The user's tokenizer as it was: a pad token mentor borrowed from EOS for batching is not saved."""
    if not getattr(tokenizer, "mentor_borrowed_pad", False):
        tokenizer.save_pretrained(path)
        return
    tokenizer.pad_token = None
    try:
        tokenizer.save_pretrained(path)
    finally:
        tokenizer.pad_token = tokenizer.eos_token


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
