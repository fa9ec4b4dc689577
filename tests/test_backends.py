"""Backends from configuration (a teacher or reference from a directory, a URL or one per data set; a sampler
from ``--sampler``), the new flags reaching the algorithms, RL's served reference, and the default warmup."""

from __future__ import annotations

import json

import pytest
import torch

from mentor.algorithms.opd import TeacherPerSource
from mentor.backends import check_teacher, make_sampler, make_teacher
from mentor.cli import main
from mentor.config import DistillConfig, RLConfig
from mentor.errors import MentorError
from mentor.evaluation.flops import MatmulParams
from mentor.models.loading import load_model, load_tokenizer
from mentor.sample.hf import HFSampler
from mentor.score.http import HTTPTeacher
from mentor.score.local import LocalTeacher
from mentor.serve import TeacherServer
from mentor.update.optim import lr_multiplier, make_scheduler, warmup_length
from tests.conftest import make_model_dir


@pytest.fixture(scope="module")
def student(tiny_dirs):
    return load_model(tiny_dirs["student"]), load_tokenizer(tiny_dirs["student"])


@pytest.fixture(scope="module")
def served_teacher(tiny_dirs):
    with TeacherServer(load_model(tiny_dirs["teacher"]), load_tokenizer(tiny_dirs["teacher"]), port=0) as running:
        yield running


def _config(tiny_dirs, teacher, **fields):
    return DistillConfig(student=tiny_dirs["student"], teacher=teacher, task="arithmetic", **fields)


def test_a_directory_is_an_in_process_teacher_with_its_size(tiny_dirs, student):
    model, tokenizer = student
    teacher, params = make_teacher(tiny_dirs["teacher"], _config(tiny_dirs, tiny_dirs["teacher"]), tokenizer, model)
    assert isinstance(teacher, LocalTeacher) and params == MatmulParams.of(teacher.model).total > 0
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_a_url_is_a_server_teacher_without_a_size(tiny_dirs, student, served_teacher):
    model, tokenizer = student
    config = _config(tiny_dirs, served_teacher.url, teacher_timeout=30.0)
    teacher, params = make_teacher(served_teacher.url, config, tokenizer, model)
    assert isinstance(teacher, HTTPTeacher) and params is None and teacher.timeout == 30.0


def test_one_teacher_per_data_set_mixes_both_kinds(tiny_dirs, student, served_teacher):
    model, tokenizer = student
    spec = f"a={tiny_dirs['teacher']},b={served_teacher.url}"
    teacher, params = make_teacher(spec, _config(tiny_dirs, spec, prompts="a=x.jsonl,b=y.jsonl"), tokenizer, model)
    assert isinstance(teacher, TeacherPerSource) and params is None  # FLOPs are counted per data set
    assert isinstance(teacher.teachers["a"], LocalTeacher) and isinstance(teacher.teachers["b"], HTTPTeacher)
    assert set(teacher.params) == {"a"}  # the server's size is unknown


def test_another_vocabulary_fails_before_any_weights_load(tiny_dirs, student, tmp_path, monkeypatch):
    _, tokenizer = student
    other = make_model_dir(tmp_path / "other", alphabet="0123456789+*=abc")
    loaded = []
    monkeypatch.setattr("mentor.backends.load_model", lambda *a, **k: loaded.append(a))
    with pytest.raises(MentorError, match="one vocabulary"):
        check_teacher(other, _config(tiny_dirs, other), tokenizer)
    assert not loaded


def test_make_sampler_follows_the_config(tiny_dirs, student):
    model, tokenizer = student
    config = _config(tiny_dirs, tiny_dirs["teacher"], temperature=0.7, max_new_tokens=5, micro_batch_size=3)
    sampler = make_sampler(config, model, tokenizer, tiny_dirs["student"])
    assert isinstance(sampler, HFSampler) and (sampler.temperature, sampler.max_new_tokens) == (0.7, 5)
    assert make_sampler(config, model, tokenizer, tiny_dirs["student"], temperature=1.3).temperature == 1.3
    if not torch.cuda.is_available():  # vllm is the one chosen: on a machine without a GPU it says so in one line
        with pytest.raises(MentorError, match="--sampler vllm needs"):
            make_sampler(
                _config(tiny_dirs, tiny_dirs["teacher"], sampler="vllm"), model, tokenizer, tiny_dirs["student"]
            )


# --- the new flags reach the algorithms --------------------------------------------------------------------
def _capture(monkeypatch, module: str, name: str) -> list:
    import importlib

    recipe = importlib.import_module(module)
    original, built = getattr(recipe, name), []

    def build(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(recipe, name, build)
    return built


def _records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_distill_flags_reach_the_algorithm(tiny_dirs, prompts_file, tmp_path, monkeypatch):
    built = _capture(monkeypatch, "mentor.recipes.distill", "OnPolicyDistillation")
    out = tmp_path / "jsd"
    assert (
        main(
            [
                "distill",
                "--student",
                tiny_dirs["student"],
                "--teacher",
                tiny_dirs["teacher"],
                "--prompts",
                prompts_file,
                "--divergence",
                "jsd",
                "--jsd-beta",
                "0.25",
                "--tis-cap",
                "2",
                "--clip-ratio",
                "0.2",
                "--steps",
                "1",
                "--batch-size",
                "2",
                "--group-size",
                "2",
                "--max-new-tokens",
                "6",
                "--output-dir",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    algorithm = built[0]
    assert (algorithm.divergence, algorithm.jsd_beta, algorithm.tis_cap, algorithm.clip_ratio) == (
        "jsd",
        0.25,
        2.0,
        0.2,
    )
    record = [r for r in _records(out) if "loss" in r][0]
    assert record["generalized_jsd"] > 0 and "tis_capped_fraction" in record


def test_rl_flags_and_a_served_reference_match_the_in_process_one(tiny_dirs, tmp_path, monkeypatch, served_teacher):
    """--reference URL scores the KL penalty through a server: the same numbers as the model in-process."""
    built = _capture(monkeypatch, "mentor.recipes.rl", "ReinforcementLearning")
    common = [
        "--model",
        tiny_dirs["student"],
        "--task",
        "arithmetic",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--group-size",
        "4",
        "--max-new-tokens",
        "6",
        "--eval-size",
        "2",
        "--kl-coef",
        "0.1",
        "--tis-cap",
        "1.5",
        "--clip-ratio",
        "0.3",
        "--seed",
        "4",
        "--quiet",
    ]
    runs = {"local": tiny_dirs["teacher"], "served": served_teacher.url}
    for name, reference in runs.items():
        assert main(["rl", *common, "--reference", reference, "--output-dir", str(tmp_path / name)]) == 0
    local, served = built
    assert isinstance(local.reference, LocalTeacher) and isinstance(served.reference, HTTPTeacher)
    assert (served.tis_cap, served.clip_ratio) == (1.5, 0.3)
    pairs = [(a, b) for a, b in zip(_records(tmp_path / "local"), _records(tmp_path / "served")) if "loss" in a]
    assert len(pairs) == 2
    for a, b in pairs:
        assert "tis_capped_fraction" in a
        for key in ("kl_to_reference", "loss", "reward"):
            assert b[key] == pytest.approx(a[key], abs=1e-4), key
    assert pairs[-1][0]["flops_reference_score"] > 0 and not pairs[-1][1].get("flops_reference_score")  # size unknown


def test_rl_reference_url_needs_its_tokenizer_to_match(tiny_dirs, tmp_path):
    other = make_model_dir(tmp_path / "other", alphabet="0123456789+*=abc")
    with TeacherServer(load_model(other), load_tokenizer(other), port=0) as running:
        config = RLConfig(
            model=tiny_dirs["student"],
            task="arithmetic",
            kl_coef=0.1,
            reference=running.url,
            output_dir=str(tmp_path / "run"),
            steps=1,
            quiet=True,
        )
        from mentor.recipes.rl import run_rl

        with pytest.raises(MentorError, match="one vocabulary"):
            run_rl(config)
    assert not (tmp_path / "run").exists()


# --- the default warmup -------------------------------------------------------------------------------------
def test_warmup_resolves_to_a_short_ramp():
    assert [warmup_length(-1, total) for total in (5, 19, 20, 55, 100, 5000)] == [0, 1, 2, 5, 10, 10]
    assert warmup_length(0, 1000) == 0 and warmup_length(7, 1000) == 7
    assert lr_multiplier(0, 100, "constant", 10) == pytest.approx(0.1)


def _lrs(scheduler, optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_a_fresh_optimizer_warms_up_and_a_resumed_one_does_not():
    def fresh():
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
        return optimizer, make_scheduler(optimizer, 100, "cosine", -1)

    optimizer, scheduler = fresh()
    uninterrupted = _lrs(scheduler, optimizer, 30)
    assert uninterrupted[0] == pytest.approx(1e-4) and uninterrupted[9] == pytest.approx(1e-3)  # 10 steps of ramp
    optimizer, scheduler = fresh()
    first = _lrs(scheduler, optimizer, 4)
    saved = scheduler.state_dict()
    optimizer, scheduler = fresh()  # a new process: the checkpoint's scheduler state is loaded
    scheduler.load_state_dict(saved)
    optimizer.param_groups[0]["lr"] = scheduler.get_last_lr()[0]  # as the optimizer's own state restores it
    assert first + _lrs(scheduler, optimizer, 26) == pytest.approx(uninterrupted, rel=1e-12)


def test_a_run_starts_below_the_peak_learning_rate(tiny_dirs, tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}+1=", "completion": f"{i + 1}"}) + "\n" for i in range(8)))
    out = tmp_path / "sft"
    assert (
        main(
            [
                "sft",
                "--model",
                tiny_dirs["student"],
                "--data",
                str(data),
                "--steps",
                "30",
                "--batch-size",
                "2",
                "--group-size",
                "1",
                "--learning-rate",
                "1e-3",
                "--max-new-tokens",
                "8",
                "--output-dir",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    lrs = [r["lr"] for r in _records(out) if "lr" in r]  # logged after each step: the next step's rate
    assert lrs[0] == pytest.approx(1e-3 * 2 / 3) and lrs[2] == pytest.approx(1e-3)  # 3 warmup steps
