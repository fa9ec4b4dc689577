"""Experiment A1 (``experiments/rl_vs_opd/run.py``): its data, its plateau and choice rules, and every stage end
to end at ``--quick`` sizes on a tiny Llama with mentor's character tokenizer standing in for SmolLM2-135M-Instruct
(the real model's ``--quick`` run takes minutes: ``python -m experiments.rl_vs_opd.run --quick``)."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.rl_vs_opd.run import (
    FULL,
    QUICK,
    choose_opd_rate,
    first_step_reaching,
    main,
    mul1_space,
    plateau_step,
    splits,
    write_data,
)
from mentor.tasks.loaders import FileTask


def test_splits_are_disjoint_sized_and_the_pilots_validation_problems():
    from experiments.rl_vs_opd.pilot import arithmetic

    for scale in (QUICK, FULL):
        parts = splits(scale)
        prompts = {name: {p["prompt"] for p in rows} for name, rows in parts.items()}
        assert not prompts["val"] & prompts["test"] and not prompts["train"] & (prompts["val"] | prompts["test"])
        assert parts["val"] == arithmetic("mul1", scale.val, seed=1)
        assert len(parts["test"]) == scale.test == len(prompts["test"])
        assert len(prompts["val"] | prompts["test"] | prompts["train"]) == len(mul1_space()) == 720
    # enough distinct training prompts that RL never repeats one within its step budget
    assert len(splits(FULL)["train"]) >= FULL.rl_max_steps * FULL.prompts


def test_the_validation_file_grades_as_the_gsm8k_task_with_the_numeric_grader(tmp_path):
    paths = write_data(QUICK, tmp_path)
    task = FileTask("gsm8k", paths["val"])
    problem = task.problems[0]
    answer = splits(QUICK)["val"][0]["answer"]
    assert problem.answer == answer and problem.prompt.endswith("Answer with the number only.")
    assert task.grade(f"The answer is {answer}.", problem) == 1.0
    assert task.grade(f"{int(answer) + 1}", problem) == 0.0
    train = [json.loads(line) for line in paths["train"].read_text().splitlines()]
    assert set(train[0]) == {"prompt", "answer"}


def test_plateau_is_the_best_accuracy_rising_under_three_points_over_two_evaluations():
    rising = [(0, 0.20), (5, 0.25), (10, 0.30), (15, 0.36)]
    assert plateau_step(rising, 0) is None
    assert plateau_step([*rising, (20, 0.37), (25, 0.38)], 0) == 25  # best 0.38 - 0.36 < 0.03; at 20 0.37 - 0.30
    assert plateau_step([(0, 0.20), (5, 0.21), (10, 0.22)], 0) == 10
    assert plateau_step([(0, 0.20), (5, 0.21), (10, 0.22)], 20) is None  # not before the minimum step
    assert plateau_step([(0, 0.20), (5, 0.10)], 0) is None  # two evaluations needed after the first
    dip = [(0, 0.2), (5, 0.3), (10, 0.5), (15, 0.2), (20, 0.51)]
    assert plateau_step(dip, 0) == 20  # at 15 the best still rose 0.2 over two evaluations; at 20 by 0.01


def test_steps_to_target_and_the_opd_rate_choice():
    curve = [(0, 0.2), (5, 0.35), (10, 0.5), (15, 0.49)]
    assert first_step_reaching(curve, 0.5) == 10 and first_step_reaching(curve, 0.6) is None
    grid = {1e-5: {"steps_to_target": 15, "curve": [(15, 0.5)]}, 3e-5: {"steps_to_target": 5, "curve": [(15, 0.4)]}}
    assert choose_opd_rate(grid, (1e-5, 3e-5)) == 3e-5  # the first to reach the target
    neither = {
        1e-5: {"steps_to_target": None, "curve": [(20, 0.3)]},
        3e-5: {"steps_to_target": None, "curve": [(20, 0.4)]},
    }
    assert choose_opd_rate(neither, (1e-5, 3e-5)) == 3e-5  # else the higher final accuracy


def tiny_llama(path: Path) -> str:
    """A 2-layer Llama with mentor's character tokenizer and its chat template."""
    from mentor.models.tiny import build_char_tokenizer, build_tiny_model, save_tiny, tiny_config

    tokenizer = build_char_tokenizer()
    config = tiny_config("llama", len(tokenizer), 32, 2, 4, tokenizer=tokenizer, max_positions=256)
    save_tiny(build_tiny_model(config, seed=0), tokenizer, path)
    return str(path)


def test_a1_end_to_end_at_quick_sizes_and_a_rerun_skips_what_is_done(tmp_path):
    model = tiny_llama(tmp_path / "tiny")
    out = tmp_path / "a1"
    main(["--quick", "--quiet", "--out", str(out), "--model", model])
    state = json.loads((out / "state.json").read_text())
    rl, opd = state["chosen"]["rl"], state["chosen"]["opd"]
    for seed in QUICK.seeds:
        teacher = state["runs"][f"rl_lr{rl:g}_seed{seed}"]
        assert teacher["plateau_step"] <= QUICK.rl_max_steps
        assert [s for s, _ in teacher["curve"]] == list(range(0, teacher["plateau_step"] + 1, QUICK.eval_every))
        student = state["runs"][f"opd_lr{opd:g}_seed{seed}"]
        assert student["teacher"] == f"rl_lr{rl:g}_seed{seed}"
        assert [s for s, _ in student["curve"]] == list(range(0, QUICK.opd_steps + 1, QUICK.eval_every))
        assert state["test"][f"opd_lr{opd:g}_seed{seed}"]["n"] == QUICK.test
    for name in ("results.md", "results.json", "rl_vs_opd.png"):
        assert (out / name).stat().st_size > 0
    assert "QUICK SIZES" in (out / "results.md").read_text()
    before = (out / "state.json").read_text()
    main(["--quick", "--quiet", "--out", str(out), "--model", model])  # everything done: nothing re-runs
    assert json.loads((out / "state.json").read_text())["runs"] == json.loads(before)["runs"]


def test_a_model_that_does_not_exist_is_one_line_and_writes_nothing(tmp_path):
    import pytest

    out = tmp_path / "a1"
    with pytest.raises(SystemExit, match="does not exist"):
        main(["--out", str(out), "--model", str(tmp_path / "none.gguf")])
    assert not out.exists()
