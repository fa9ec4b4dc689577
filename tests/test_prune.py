"""``mentor prune``: the pruned model is the original with those decoder layers skipped, saved as a plain
transformers directory (config fields follow the kept layers), and bad input is refused in one line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from mentor.cli import main
from mentor.errors import MentorError
from mentor.models.prune import (
    block_influence,
    check_drop,
    layers_by_influence,
    layers_evenly,
    layers_every,
    middle_range,
    parse_layers,
    prune,
    prune_model,
)
from mentor.models.tiny import build_char_tokenizer, build_tiny_model, save_tiny, tiny_config

IDS = torch.tensor([[1, 12, 7, 30, 9, 22, 15, 40, 3, 18, 25, 11, 6, 33]])  # 14 tokens: longer than the windows


def _config(arch: str, layers: int):
    """Small real configs; the sliding ones have a window (4) shorter than IDS, so a wrong per-layer type
    changes the logits."""
    tokenizer = build_char_tokenizer()
    if arch == "gemma3_text":  # sliding and full layers interleaved (layer_types), local and global RoPE
        return AutoConfig.for_model(
            "gemma3_text",
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=64,
            sliding_window=4,
            layer_types=["sliding_attention" if i % 3 else "full_attention" for i in range(layers)],
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    config = tiny_config(
        "qwen2" if arch == "qwen2_sliding" else arch,
        len(tokenizer),
        32,
        layers,
        4,
        tokenizer=tokenizer,
        max_positions=64,
    )
    if arch == "mistral":
        config.sliding_window = 4
    if arch == "qwen2_sliding":  # sliding windows from layer 3 on (max_window_layers)
        fields = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "layer_types")}
        config = AutoConfig.for_model(
            "qwen2", **{**fields, "use_sliding_window": True, "sliding_window": 4, "max_window_layers": 3}
        )
        assert config.layer_types == ["full_attention"] * 3 + ["sliding_attention"] * 3
    return config


def _model_dir(path: Path, arch: str, layers: int = 6, seed: int = 0) -> str:
    config = _config(arch, layers)
    save_tiny(build_tiny_model(config, seed=seed), build_char_tokenizer(), path)
    return str(path)


def _skipping(model, drop):
    """``model`` (unchanged) with the layers ``drop`` made identities by hooks: the reference forward."""

    def identity(module, args, kwargs, output):
        x = args[0] if args else kwargs["hidden_states"]
        return (x, *output[1:]) if isinstance(output, tuple) else x

    return [model.model.layers[i].register_forward_hook(identity, with_kwargs=True) for i in drop]


def _tree_digest(path: Path) -> dict:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "arch,drop",
    [("qwen3", [1, 3]), ("llama", [0, 5]), ("mistral", [2, 3, 4]), ("gemma3_text", [1, 3]), ("qwen2_sliding", [0, 4])],
)
def test_pruned_model_is_the_original_with_those_layers_skipped(tmp_path, arch, drop):
    source = _model_dir(tmp_path / "model", arch)
    before = _tree_digest(tmp_path / "model")
    result = prune(source, tmp_path / "pruned", drop=drop, log=lambda *_: None)
    assert _tree_digest(tmp_path / "model") == before  # the input is only read

    original = AutoModelForCausalLM.from_pretrained(source).eval()
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    keep = [i for i in range(6) if i not in drop]
    assert result.dropped == drop and result.kept == keep and result.layers_after == len(keep)
    assert pruned.config.num_hidden_layers == len(keep) == len(pruned.model.layers)
    types = getattr(original.config, "layer_types", None)
    if types is not None:
        assert pruned.config.layer_types == [types[i] for i in keep]
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == list(range(len(keep)))
    for new, old in enumerate(keep):  # the kept layers' weights, unchanged, in order
        torch.testing.assert_close(
            pruned.model.layers[new].mlp.down_proj.weight,
            original.model.layers[old].mlp.down_proj.weight,
            rtol=0,
            atol=0,
        )

    handles = _skipping(original, drop)
    with torch.no_grad():
        reference = original(IDS, use_cache=False).logits
        got = pruned(IDS).logits
        # greedy decoding with the KV cache: the renumbered layer_idx index the cache's slots
        cached = pruned.generate(IDS, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = original.generate(IDS, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)
    assert cached.tolist() == uncached.tolist()
    assert not torch.allclose(original(IDS).logits, reference, atol=1e-3)  # the skipped layers did matter


def test_output_directory_is_a_complete_model(tmp_path):
    source = _model_dir(tmp_path / "model", "qwen3")
    assert main(["prune", source, "--drop", "2-3", "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names
    assert not [n for n in names if "partial" in n] and not list(tmp_path.glob(".out.partial*"))
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 4 and len(config["layer_types"]) == 4
    record = json.loads((out / "mentor_prune.json").read_text())
    assert record["dropped"] == [2, 3] and record["parameters_after"] < record["parameters_before"]
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(source).get_vocab()


def test_an_empty_out_directory_is_used(tmp_path):
    source = _model_dir(tmp_path / "model", "llama", layers=3)
    (tmp_path / "empty").mkdir()
    prune(source, tmp_path / "empty", drop="1", log=lambda *_: None)
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "empty").config.num_hidden_layers == 2


def test_rules():
    assert list(middle_range(30)) == list(range(7, 23))
    assert layers_evenly(30, 3) == [9, 15, 20]
    assert layers_evenly(30, 4) == [9, 13, 17, 21]
    assert layers_evenly(30, 6) == [8, 11, 13, 16, 19, 21]
    assert layers_evenly(4, 1) == [2]
    assert layers_every(30, 5) == [4, 9, 14, 19, 24]  # 29, the last layer, is kept
    assert layers_every(30, 3) == list(range(2, 29, 3))
    assert layers_by_influence([0.3, 0.1, 0.2, 0.1, 0.5], 2) == [1, 3]
    assert layers_by_influence([0.3, 0.1, 0.2, 0.1, 0.5], 3) == [1, 2, 3]
    assert parse_layers("12, 16,20") == [12, 16, 20] and parse_layers("3-5,9") == [3, 4, 5, 9]
    assert check_drop([5, 1], 6) == [1, 5]


def test_block_influence_finds_a_layer_that_does_nothing(tmp_path):
    """A layer whose attention and MLP outputs are zeroed passes its input through: influence 0, dropped first;
    pruning it changes no logit."""
    source = _model_dir(tmp_path / "model", "llama", layers=5)
    model = AutoModelForCausalLM.from_pretrained(source).eval()
    with torch.no_grad():
        model.model.layers[3].self_attn.o_proj.weight.zero_()
        model.model.layers[3].mlp.down_proj.weight.zero_()
    scores = block_influence(model, build_char_tokenizer(), prompts=["abc def", "12+34=46"])
    assert abs(scores[3]) < 1e-6 and min(s for i, s in enumerate(scores) if i != 3) > 1e-3
    assert layers_by_influence(scores, 1) == [3]
    with torch.no_grad():
        full = model(IDS).logits
        prune_model(model, [3])
        torch.testing.assert_close(model(IDS).logits, full, rtol=1e-6, atol=1e-6)


def test_cli_rules_pick_the_documented_layers(tmp_path, capsys):
    source = _model_dir(tmp_path / "model", "qwen3", layers=8)
    assert main(["prune", source, "--drop-evenly", "2", "--out", str(tmp_path / "even")]) == 0
    assert json.loads((tmp_path / "even" / "mentor_prune.json").read_text())["dropped"] == [3, 5]  # middle 2-5
    assert main(["prune", source, "--drop-every", "3", "--out", str(tmp_path / "every")]) == 0
    assert json.loads((tmp_path / "every" / "mentor_prune.json").read_text())["dropped"] == [2, 5]
    assert main(["prune", source, "--drop-by-influence", "2", "--out", str(tmp_path / "bi")]) == 0
    record = json.loads((tmp_path / "bi" / "mentor_prune.json").read_text())
    assert len(record["block_influence"]) == 8 and record["dropped"] == layers_by_influence(
        record["block_influence"], 2
    )
    out = capsys.readouterr().out
    assert "8 -> 6 layers" in out and "parameters" in out


def test_moe_layer_pattern_follows_the_kept_layers():
    """Qwen3-MoE with sparse blocks on every 2nd layer: the pruned config names the kept dense layers
    explicitly, so the architecture it builds matches the kept weights (checked inside prune_model)."""
    config = AutoConfig.for_model(
        "qwen3_moe",
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        moe_intermediate_size=8,
        num_hidden_layers=6,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        num_experts=4,
        num_experts_per_tok=2,
        decoder_sparse_step=2,
        mlp_only_layers=[3],
    )
    model = build_tiny_model(config)
    sparse_before = [type(layer.mlp).__name__ for layer in model.model.layers]
    prune_model(model, [0, 3])
    assert model.config.num_hidden_layers == 4 and model.config.decoder_sparse_step == 1
    # sparse before: 1 and 5 (every 2nd, less mlp_only 3); kept 1, 2, 4, 5: dense 2 and 4, now layers 1 and 2
    assert model.config.mlp_only_layers == [1, 2]
    assert [type(layer.mlp).__name__ for layer in model.model.layers] == [sparse_before[i] for i in (1, 2, 4, 5)]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--drop", "6"], "layer 6 is out of range: the model has 6 decoder layers"),
        (["--drop", "-1"], "layer -1 is out of range"),
        (["--drop", "2,2"], "layer 2 is named twice"),
        (["--drop", "0-5"], "dropping all 6 decoder layers leaves no model"),
        (["--drop", "x"], "'x' is not a layer index"),
        (["--drop", "4-2"], "is empty"),
        (["--drop", ","], "names no layer"),
        (["--drop-every", "1"], "K must be at least 2"),
        (["--drop-every", "9"], "drops nothing"),
        (["--drop-evenly", "5"], "the middle half of a 6-layer model has only 4 layers (1-4)"),
        (["--drop-evenly", "0"], "N must be at least 1"),
        (["--drop-by-influence", "6"], "N must be between 1 and 5"),
    ],
)
def test_bad_layer_choices_are_refused_in_one_line(tmp_path, capsys, args, message):
    source = _model_dir(tmp_path / "model", "qwen3")
    before = _tree_digest(tmp_path / "model")
    assert main(["prune", source, *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists() and _tree_digest(tmp_path / "model") == before


def test_existing_output_is_never_touched(tmp_path, capsys):
    source = _model_dir(tmp_path / "model", "qwen3")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("mine too")
    assert main(["prune", source, "--drop", "1", "--out", str(tmp_path / "busy")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["prune", source, "--drop", "1", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine" and (tmp_path / "file").read_text() == "mine too"
    assert main(["prune", source, "--drop", "1", "--out", str(tmp_path / "model")]) == 2  # the input itself
    assert "exists and is not empty" in capsys.readouterr().err


def test_bad_model_and_missing_rule(tmp_path, capsys):
    assert main(["prune", str(tmp_path / "nowhere"), "--drop", "1", "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    source = _model_dir(tmp_path / "model", "qwen3")
    with pytest.raises(SystemExit) as exit_:
        main(["prune", source, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2 and "one of the arguments" in capsys.readouterr().err
    with pytest.raises(MentorError, match="exactly one way"):
        prune(source, tmp_path / "out", drop=[1], every=2)


def test_real_gguf_pruned_equals_skipping(tmp_path):
    """SmolLM2-135M-Instruct from its GGUF (30 layers): the command's output reloads through
    AutoModelForCausalLM and equals the dequantized original with layers 12, 16 and 20 skipped."""
    from real_assets import Unavailable, smollm2_gguf

    from mentor.models.loading import load_model, load_tokenizer

    try:
        gguf = smollm2_gguf()
    except Unavailable as exc:
        pytest.skip(str(exc))
    assert main(["prune", str(gguf), "--drop", "12,16,20", "--out", str(tmp_path / "smol27")]) == 0
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "smol27").eval()
    assert pruned.config.num_hidden_layers == 27
    tokenizer = load_tokenizer(str(gguf))
    assert AutoTokenizer.from_pretrained(tmp_path / "smol27").chat_template == tokenizer.chat_template
    original = load_model(str(gguf)).eval()
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    handles = _skipping(original, [12, 16, 20])
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, original(ids, use_cache=False).logits, rtol=1e-4, atol=1e-4)
    for handle in handles:
        handle.remove()
