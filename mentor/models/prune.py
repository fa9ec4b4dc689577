"""Layer pruning: a smaller model made from the one you have by removing whole decoder layers.

``mentor prune MODEL --drop 12,16,20 --out DIR`` (or a rule: ``--drop-every K``, ``--drop-evenly N``,
``--drop-by-influence N``) writes a plain transformers directory (safetensors, config.json with the new
``num_hidden_layers``, tokenizer, generation config) that ``AutoModelForCausalLM.from_pretrained`` and vLLM load.
The pruned model computes exactly what the original computes with those layers skipped (the residual stream
passes through unchanged); ``tests/test_prune.py`` checks it on Qwen3, Llama, Mistral and Gemma-style configs.

Per-layer config fields follow the kept layers (``layer_types``, ``no_rope_layers``; any list of one entry per
layer whose name mentions a layer), layer-index lists are renumbered (``mlp_only_layers``), counts of leading
layers are recounted (``max_window_layers``, ``first_k_dense_replace``), and every module's ``layer_idx`` (the
KV-cache slot) is renumbered 0..n-1. Whatever the config says, the pruned weights are checked against the
architecture the new config builds (on the meta device: no memory); a mismatch stops with one line.
The input is only read; the output directory is written beside it under a temporary name and renamed into
place at the end, so a failure never leaves a half-written model and never touches an existing file.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from mentor.errors import MentorError

# Built-in calibration text for --drop-by-influence (ShortGPT measured on generic text; these are fixed so that
# a rule gives the same layers every time): everyday prose, a fact, a small word problem, code, a list.
INFLUENCE_PROMPTS = (
    "The city library opens at nine in the morning and closes at six in the evening, except on Sundays.",
    "Water boils at 100 degrees Celsius at sea level; at higher altitudes it boils at a lower temperature.",
    "Tom has 3 boxes with 12 apples in each box. He gives away 7 apples. How many apples does he have left?",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "To make tea, boil water, put a tea bag in a cup, pour the water over it and wait three minutes.",
    "Here are three tips for better sleep: keep a regular schedule, avoid screens before bed, and exercise.",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
)

# Config lists of layer *indices* (not one entry per layer): renumbered to the kept layers' new positions.
INDEX_LISTS = ("mlp_only_layers",)
# Config integers that count leading layers: recounted over the kept layers.
LEADING_COUNTS = ("max_window_layers", "first_k_dense_replace")
# Config integers whose layer pattern cannot follow a removal unless they are 1 (every layer alike).
PERIODS = ("moe_layer_freq", "interleave_moe_layer_step")


@dataclass
class PruneResult:
    source: str
    out: str
    rule: str
    dropped: list[int]
    kept: list[int]
    layers_before: int
    layers_after: int
    parameters_before: int
    parameters_after: int
    block_influence: list[float] = field(default_factory=list)

    def summary(self) -> str:
        share = 1 - self.parameters_after / self.parameters_before
        big = self.parameters_before >= 10**6
        before, after = (
            (f"{n / 1e6:.2f}M" if big else f"{n:,}") for n in (self.parameters_before, self.parameters_after)
        )
        return (
            f"dropped layers {', '.join(map(str, self.dropped))} ({self.rule}): {self.layers_before} -> "
            f"{self.layers_after} layers, parameters {before} -> {after} (-{share:.1%})"
        )


# ----------------------------------------------------------------------------------------------- the rules


def parse_layers(text: str) -> list[int]:
    """``"12,16,20"`` -> [12, 16, 20] (0-based; ranges ``4-7`` allowed); syntax only, range checked later."""
    layers: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            ids = range(int(first), int(last) + 1) if dash and first else [int(part)]
        except ValueError:
            raise MentorError(
                f"--drop {text!r}: {part!r} is not a layer index; give 0-based indices such as "
                "12,16,20 or a range 12-15"
            ) from None
        if dash and first and int(last) < int(first):
            raise MentorError(f"--drop {text!r}: the range {part!r} is empty; write it low-high")
        layers.extend(ids)
    if not layers:
        raise MentorError(f"--drop {text!r} names no layer: give 0-based indices such as 12,16,20")
    return layers


def check_drop(drop: list[int], num_layers: int) -> list[int]:
    """The layers to drop, sorted, or one line saying what is wrong."""
    seen = set()
    for i in drop:
        if not 0 <= i < num_layers:
            raise MentorError(
                f"layer {i} is out of range: the model has {num_layers} decoder layers (0 to {num_layers - 1})"
            )
        if i in seen:
            raise MentorError(f"layer {i} is named twice: name each layer to drop once")
        seen.add(i)
    if len(seen) >= num_layers:
        raise MentorError(f"dropping all {num_layers} decoder layers leaves no model: keep at least one")
    return sorted(seen)


def layers_every(num_layers: int, k: int) -> list[int]:
    """Every k-th layer counting from 1 (indices k-1, 2k-1, ...), never the last layer."""
    if k < 2:
        raise MentorError(f"--drop-every {k}: K must be at least 2 (K=1 would drop every layer)")
    drop = [i for i in range(k - 1, num_layers - 1, k)]
    if not drop:
        raise MentorError(
            f"--drop-every {k} drops nothing from a {num_layers}-layer model (the last layer is always "
            f"kept): use a smaller K"
        )
    return drop


def middle_range(num_layers: int) -> range:
    """The middle half of the stack: layers floor(L/4) .. ceil(3L/4) - 1 (30 layers: 7..22)."""
    return range(num_layers // 4, math.ceil(3 * num_layers / 4))


def layers_evenly(num_layers: int, n: int) -> list[int]:
    """n layers evenly spaced over the middle half: the middle range split into n equal bins, each bin's centre
    (rounded down). 30 layers: n=3 -> 9,15,20; n=4 -> 9,13,17,21; n=6 -> 8,11,13,16,19,21."""
    middle = middle_range(num_layers)
    if n < 1:
        raise MentorError(f"--drop-evenly {n}: N must be at least 1")
    if n > len(middle):
        raise MentorError(
            f"--drop-evenly {n}: the middle half of a {num_layers}-layer model has only {len(middle)} "
            f"layers ({middle.start}-{middle.stop - 1}); name the layers with --drop instead"
        )
    width = len(middle) / n
    return [middle.start + math.floor((j + 0.5) * width) for j in range(n)]


def block_influence(model: nn.Module, tokenizer, prompts=INFLUENCE_PROMPTS) -> list[float]:
    """ShortGPT's Block Influence of every decoder layer: 1 - mean cosine similarity of the hidden state
    entering and leaving the layer, over every token of ``prompts`` (each run alone: no padding)."""
    _, layers = decoder_layers(model)
    sums = [0.0] * len(layers)
    count = 0

    def hook(index):
        def record(module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]
            y = output[0] if isinstance(output, (tuple, list)) else output
            cos = torch.nn.functional.cosine_similarity(x.float().flatten(0, -2), y.float().flatten(0, -2), dim=-1)
            sums[index] += float(cos.sum())

        return record

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for text in prompts:
                ids = tokenizer(text, return_tensors="pt").input_ids.to(device)
                model(input_ids=ids, use_cache=False)
                count += ids.shape[1]
    finally:
        for handle in handles:
            handle.remove()
    return [1 - s / count for s in sums]


def layers_by_influence(scores: list[float], n: int) -> list[int]:
    """The n layers of lowest Block Influence (ties: the lower index)."""
    if not 1 <= n < len(scores):
        raise MentorError(
            f"--drop-by-influence {n}: N must be between 1 and {len(scores) - 1} for a {len(scores)}-layer model"
        )
    return sorted(sorted(range(len(scores)), key=lambda i: (scores[i], i))[:n])


# ------------------------------------------------------------------------------------------- the surgery


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's list of decoder layers (``model.layers``, ``transformer.h``, ...), found by its length."""
    num_layers = model.config.get_text_config().num_hidden_layers
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) == num_layers
        and name.rsplit(".", 1)[-1] in ("layers", "h", "blocks", "layer")
    ]
    if len(found) != 1:
        raise MentorError(
            f"cannot find this model's decoder layers ({type(model).__name__}: "
            f"{len(found)} lists of {num_layers} layers): mentor prunes decoder-only language models"
        )
    return found[0]


def prune_model(model: nn.Module, drop: list[int]) -> nn.Module:
    """Remove the decoder layers ``drop`` from ``model`` in place (weights shared, nothing copied): its config,
    its layer list and every module's ``layer_idx`` follow. Returns the model."""
    config = model.config.get_text_config()
    num_layers = config.num_hidden_layers
    drop = check_drop(list(drop), num_layers)
    keep = [i for i in range(num_layers) if i not in set(drop)]
    new_config = _pruned_config(config, keep)
    name, layers = decoder_layers(model)
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    setattr(parent, name.rsplit(".", 1)[-1], nn.ModuleList([layers[i] for i in keep]))
    for new_index, layer in enumerate(getattr(parent, name.rsplit(".", 1)[-1])):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    for key, value in new_config.items():  # the config object is shared by the modules: change it in place
        setattr(config, key, value)
    _check_structure(model)
    return model


def _pruned_config(config, keep: list[int]) -> dict:
    """The config fields that change when only the layers ``keep`` (old indices, ascending) remain."""
    num_layers = config.num_hidden_layers
    new_index = {old: new for new, old in enumerate(keep)}
    changes: dict = {"num_hidden_layers": len(keep)}
    for key, value in config.to_dict().items():
        if key in INDEX_LISTS and isinstance(value, (list, tuple)):
            changes[key] = [new_index[i] for i in value if i in new_index]
        elif key in LEADING_COUNTS and isinstance(value, int) and not isinstance(value, bool):
            changes[key] = sum(1 for i in keep if i < value)
        elif key in PERIODS and isinstance(value, int) and value not in (0, 1):
            raise MentorError(
                f"this model's config sets {key}={value} (a layer pattern that removing layers would "
                "shift): mentor cannot prune it by layer"
            )
        elif isinstance(value, (list, tuple)) and "layer" in key and "token" not in key:
            if len(value) != num_layers:
                raise MentorError(
                    f"this model's config field {key} ({len(value)} entries) is neither one entry per "
                    f"layer ({num_layers}) nor a known list of layer indices: mentor cannot prune it"
                )
            changes[key] = [value[i] for i in keep]
    step = getattr(config, "decoder_sparse_step", None)  # Qwen-MoE: sparse where (i + 1) % step == 0
    if isinstance(step, int) and step > 1 and getattr(config, "num_experts", 0):
        dense = set(getattr(config, "mlp_only_layers", None) or []) | {i for i in range(num_layers) if (i + 1) % step}
        changes["mlp_only_layers"] = [new_index[i] for i in keep if i in dense]
        changes["decoder_sparse_step"] = 1
    return changes


def _check_structure(model: nn.Module) -> None:
    """The pruned weights are exactly what the new config builds (names and shapes), or one line."""
    with torch.device("meta"):
        reference = type(model)(copy.deepcopy(model.config))
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if expected != actual:
        differing = sorted(set(expected.items()) ^ set(actual.items()))
        raise MentorError(
            f"after removing layers, this {type(model).__name__} no longer matches what its config "
            f"builds ({len(differing)} tensors differ, e.g. {differing[0][0]}): its layers are not all "
            "alike, and mentor cannot prune it by layer"
        )


# ------------------------------------------------------------------------------------------- the command


def check_out(out: str | Path) -> Path:
    """An output directory that does not exist yet, or exists empty: mentor never writes over a user's files."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise MentorError(f"--out {str(out)!r} is a file: pass a new directory")
    if path.is_dir() and any(path.iterdir()):
        raise MentorError(
            f"--out {str(out)!r} exists and is not empty: pass a new directory (mentor never writes "
            "over existing files)"
        )
    return path


def _num_layers_and_dtype(model_path: str, dtype: str) -> tuple[int, str]:
    """Read the config only (no weights): the layer count, and the dtype ``auto`` means."""
    from transformers import AutoConfig

    from mentor.models.loading import DTYPES, _source_kwargs

    source, kwargs = _source_kwargs(model_path, "model")
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except Exception as exc:  # noqa: BLE001  (missing or corrupt config.json: the loader's own types)
        raise MentorError(f"cannot read the config of {model_path!r} ({' '.join(str(exc).split())[:160]})") from None
    text = config.get_text_config()
    num_layers = getattr(text, "num_hidden_layers", None)
    if not isinstance(num_layers, int) or num_layers < 1:
        raise MentorError(f"{model_path!r}'s config names no decoder layer count (num_hidden_layers)")
    if dtype == "auto":
        stored = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
        dtype = stored.replace("torch.", "") if "gguf_file" not in kwargs else "float32"
        dtype = dtype if dtype in DTYPES else "float32"
    return num_layers, dtype


def prune(
    model_path: str,
    out: str | Path,
    *,
    drop: str | list[int] | None = None,
    every: int | None = None,
    evenly: int | None = None,
    by_influence: int | None = None,
    dtype: str = "auto",
    log=print,
) -> PruneResult:
    """Load ``model_path`` (directory, .gguf file or hub id), remove layers by one rule, save to ``out``."""
    from mentor.models.loading import count_parameters, load_model, load_tokenizer

    rules = [r for r in (drop, every, evenly, by_influence) if r is not None]
    if len(rules) != 1:
        raise MentorError(
            "name the layers to drop in exactly one way: --drop, --drop-every, --drop-evenly or --drop-by-influence"
        )
    out = check_out(out)
    listed = parse_layers(drop) if isinstance(drop, str) else list(drop) if drop is not None else None
    num_layers, dtype = _num_layers_and_dtype(model_path, dtype)
    if listed is not None:
        chosen, rule = check_drop(listed, num_layers), "--drop"
    elif every is not None:
        chosen, rule = layers_every(num_layers, every), f"every {every}th layer"
    elif evenly is not None:
        chosen, rule = layers_evenly(num_layers, evenly), f"{evenly} evenly spaced over the middle half"
    else:
        layers_by_influence([0.0] * num_layers, by_influence)  # refuse a bad N before loading anything
        chosen, rule = None, f"lowest block influence ({by_influence})"
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, dtype=dtype)
    model.eval()
    scores: list[float] = []
    if chosen is None:
        scores = block_influence(model, tokenizer)
        chosen = layers_by_influence(scores, by_influence)
    before = count_parameters(model)
    prune_model(model, chosen)
    result = PruneResult(
        source=model_path,
        out=str(out),
        rule=rule,
        dropped=chosen,
        kept=[i for i in range(num_layers) if i not in chosen],
        layers_before=num_layers,
        layers_after=num_layers - len(chosen),
        parameters_before=before,
        parameters_after=count_parameters(model),
        block_influence=[round(s, 6) for s in scores],
    )
    log(f"{model_path}: {result.summary()}")
    _save_atomically(model, tokenizer, out, result)
    log(f"wrote {out} (loads with AutoModelForCausalLM.from_pretrained; mentor_prune.json records the rule)")
    return result


def _save_atomically(model, tokenizer, out: Path, result: PruneResult) -> None:
    from mentor.models.loading import save_pretrained

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        save_pretrained(model, tokenizer, partial)
        (partial / "mentor_prune.json").write_text(json.dumps(asdict(result), indent=1) + "\n")
        check_out(out)  # still new or empty: nothing of the user's is replaced
        os.replace(partial, out)  # a directory renames over an empty one; never over files
    finally:
        if partial.exists():
            shutil.rmtree(partial)
