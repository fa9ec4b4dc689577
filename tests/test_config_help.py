"""Config fields carry their documentation (``--help`` shows it with each default), are declared once, and
contradictory combinations (clipping, truncation, JSD, warmup) are refused with one line."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from mentor.cli import build_parser
from mentor.coe.recipe import CoEConfig
from mentor.config import DistillConfig, RLConfig, SFTConfig
from mentor.errors import MentorError

RECIPES = {"distill": DistillConfig, "sft": SFTConfig, "rl": RLConfig, "coe": CoEConfig}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _recipe_parsers():
    commands = _subparsers(build_parser())
    for name in RECIPES:
        yield name, commands[name]
    for step, parser in _subparsers(commands["coe"]).items():  # mentor coe label, train-experts, ...
        yield f"coe {step}", parser


@pytest.mark.parametrize("command, parser", list(_recipe_parsers()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_flag_has_help_with_its_default(command, parser):
    cls = RECIPES[command.split()[0]]
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    flags = [a for a in parser._actions if a.dest in defaults]
    assert len(flags) == len(defaults)  # one flag per field
    for action in flags:
        assert action.help and len(action.help) > 20, (command, action.option_strings)
        default = defaults[action.dest]
        shown = (
            str(default).lower()
            if isinstance(default, bool)
            else repr(default)
            if isinstance(default, str)
            else f"{default:g}"
            if isinstance(default, float)
            else str(default)
        )
        assert action.help.endswith(f"(default: {shown})"), (command, action.option_strings, action.help)
    parser.format_help()  # argparse's %-formatting of every help text works


def test_help_groups_the_flags_by_section():
    text = _subparsers(build_parser())["rl"].format_help()
    for title in (
        "The model to train",
        "Sampler backend",
        "Policy-gradient loss",
        "Remote teacher or reference",
        "Training",
    ):
        assert title in text
    assert "--tis-cap" in text and "--vllm-gpu-memory-utilization" in text


def _declaring_classes(cls, name):
    return [c for c in cls.__mro__ if name in c.__dict__.get("__annotations__", {})]


@pytest.mark.parametrize("cls", list(RECIPES.values()), ids=lambda c: c.__name__)
def test_a_field_is_documented_once_and_only_its_default_differs_per_recipe(cls):
    for f in dataclasses.fields(cls):
        owners = _declaring_classes(cls, f.name)
        documented = owners[-1].__dataclass_fields__[f.name].metadata
        # a recipe may give a field another default (redefault), never another declaration with its own text
        for owner in owners[:-1]:
            assert dict(owner.__dataclass_fields__[f.name].metadata) == dict(documented), (cls.__name__, f.name)


def test_fields_shared_by_recipes_come_from_one_section():
    shared_meaning_differs = {"top_k"}  # CoE's experts per token vs the sampler's top-k (refused for training)
    for a, b in [(a, b) for a in RECIPES.values() for b in RECIPES.values() if a is not b]:
        common = {f.name for f in dataclasses.fields(a)} & {f.name for f in dataclasses.fields(b)}
        for name in common - shared_meaning_differs:
            assert _declaring_classes(a, name)[-1] is _declaring_classes(b, name)[-1], (a.__name__, b.__name__, name)


def test_recipe_defaults_that_differ_are_kept():
    assert SFTConfig(model="m", task="arithmetic").max_new_tokens == 64
    assert DistillConfig(student="s", teacher="t", task="arithmetic").max_new_tokens == 256
    rl = RLConfig(model="m", task="arithmetic")
    assert rl.kl_coef == 0.0 and rl.clip_ratio == 0.0  # no clip ratio that silently did nothing
    assert DistillConfig(student="s", teacher="t", task="arithmetic").kl_coef == 1.0
    coe = CoEConfig(base="b", builtin=True)
    assert (coe.train_size, coe.group_size, coe.batch_size) == (3000, 1, 32)


# --- clipping, truncation and the other contradictions ---------------------------------------------------
def _distill(**fields):
    return DistillConfig(student="s", teacher="t", task="arithmetic", **fields)


def _rl(**fields):
    return RLConfig(model="m", task="arithmetic", **fields)


@pytest.mark.parametrize("make", [_distill, _rl], ids=["distill", "rl"])
def test_a_clip_ratio_means_the_clipped_objective_whatever_the_loss(make):
    assert make(clip_ratio=0.2).clip_ratio == 0.2  # importance_sampling + a ratio: clipped, not refused
    assert make(loss="ppo", clip_ratio=0.2).clip_ratio == 0.2
    assert make(tis_cap=2.0, clip_ratio=0.2).tis_cap == 2.0


@pytest.mark.parametrize("make", [_distill, _rl], ids=["distill", "rl"])
@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(loss="ppo"), r"--loss ppo needs --clip-ratio above 0"),
        (dict(loss="cross_entropy", clip_ratio=0.2), r"--loss cross_entropy .* no importance ratio to clip"),
        (dict(loss="kl_magic"), r"--loss 'kl_magic' is unknown: use importance_sampling or ppo"),
        (dict(clip_ratio=-0.1), r"--clip-ratio cannot be negative"),
        (dict(tis_cap=0.5), r"--tis-cap 0.5 must be at least 1 \(or 0 for off\)"),
        (dict(tis_cap=-2.0), r"--tis-cap -2 must be at least 1"),
        (dict(kl_coef=-1.0), r"--kl-coef cannot be negative"),
    ],
)
def test_contradictory_loss_settings_are_one_line(make, fields, message):
    with pytest.raises(MentorError, match=message) as caught:
        make(**fields)
    assert "\n" not in str(caught.value)


def test_jsd_settings_are_checked():
    assert _distill(divergence="jsd", jsd_beta=0.1).jsd_beta == 0.1
    with pytest.raises(MentorError, match=r"--jsd-beta only acts with --divergence jsd"):
        _distill(jsd_beta=0.1)
    with pytest.raises(MentorError, match=r"--jsd-beta must lie in \[0, 1\]"):
        _distill(divergence="jsd", jsd_beta=1.5)
    with pytest.raises(MentorError, match=r"--divergence jsd needs the teacher's whole distribution"):
        DistillConfig(student="s", teacher="http://127.0.0.1:9/v1", task="arithmetic", divergence="jsd")


def test_sampler_and_remote_settings_are_shared_and_checked():
    assert _rl(sampler="vllm", vllm_gpu_memory_utilization=0.5).sampler == "vllm"
    with pytest.raises(MentorError, match=r"--sampler 'sglang' is unknown"):
        _rl(sampler="sglang")
    with pytest.raises(MentorError, match=r"--teacher-timeout must be positive"):
        _rl(teacher_timeout=0.0)
    with pytest.raises(MentorError, match=r"--sampler only act with --from-teacher"):
        SFTConfig(model="m", task="arithmetic", sampler="vllm")
    with pytest.raises(MentorError, match=r"--from-teacher samples completions in-process"):
        SFTConfig(model="m", task="arithmetic", from_teacher="http://127.0.0.1:9/v1")
    with pytest.raises(MentorError, match=r"--prompts must name the same data sets"):
        DistillConfig(student="s", teacher="a=t1,b=t2", prompts="a=f1.jsonl")


def test_warmup_default_is_automatic_and_checked():
    assert _rl().warmup_steps == -1
    assert _rl(warmup_steps=0).warmup_steps == 0
    with pytest.raises(MentorError, match=r"--warmup-steps must be -1 \(automatic\), 0 \(none\) or more"):
        _rl(warmup_steps=-2)
