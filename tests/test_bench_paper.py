"""`mentor bench paper --only A` (A1 steps, A2 compute) end to end at the smallest knobs: every stage runs and
the report has the tables (B and C: tests/test_bench_continual.py)."""

import json

from mentor.cli import main

TINY = [
    "--start-sft-steps",
    "3",
    "--grid-steps",
    "2",
    "--val-size",
    "4",
    "--rl-steps",
    "4",
    "--opd-steps",
    "2",
    "--prompts-per-step",
    "2",
    "--group-size",
    "2",
    "--eval-every",
    "1",
    "--opd-eval-every",
    "1",
    "--test-size",
    "6",
    "--plateau-evals",
    "2",
    "--teacher-sft-steps",
    "3",
    "--samples-n0",
    "64",
    "--compute-opd-steps",
    "1",
]


def test_bench_paper_quick_writes_every_table(tmp_path):
    out = tmp_path / "paper"
    assert main(["bench", "paper", "--quick", "--quiet", "--only", "A", "--out", str(out), *TINY]) == 0
    assert "annealed start" in (out / "protocol.md").read_text()  # the protocol is written with the results
    report = (out / "results.md").read_text()
    for title in (
        "A1: the annealed start",
        "learning-rate grid",
        "steps to T_RL",
        "A2: SFT on a stochastic",
        "FLOP ratios",
    ):
        assert title in report
    assert (out / "steps.png").stat().st_size > 0 and (out / "compute.png").stat().st_size > 0
    result = json.loads((out / "results.json").read_text())
    a1 = result["A1"]
    assert set(a1["grid"]) == {"rl", "opd"} and all(3 <= len(g) <= 5 for g in a1["grid"].values())
    assert set(a1["seeds"]) == {"0", "1"}  # two seeds, each an RL run and an OPD run from S0
    for seed in a1["analysis"]["per_seed"].values():
        low, high = seed["target_ci"]
        assert low <= seed["target"] <= high
    a2 = result["A2"]
    assert sorted(int(n) for n in a2["sft"]) == [64, 128, 256]
    # SFT's points carry the teacher's sampling cost, in proportion to their samples
    flops = [a2["sft"][n]["teacher_flops"] for n in ("64", "128", "256")]
    assert flops[0] > 0 and abs(flops[2] - 4 * flops[0]) < 1e-6 * flops[2]


def test_two_bench_processes_sharing_an_out_keep_each_others_results(tmp_path):
    from experiments.paper.run import _merged

    saved = tmp_path / "results.json"
    _merged(saved, {"A1": {"x": 1}, "scale": {}}, ["A1"], {"A1": 3.0})
    merged = _merged(saved, {"A2": {"y": 2}, "scale": {}}, ["A2"], {"A2": 4.0})  # a stale view without A1
    on_disk = json.loads(saved.read_text())
    assert on_disk == merged and on_disk["A1"] == {"x": 1} and on_disk["A2"] == {"y": 2}
    assert on_disk["minutes"] == {"A1": 3.0, "A2": 4.0}


def test_a2_waits_for_the_start_that_another_process_is_choosing(tmp_path):
    import threading

    from experiments.paper.steps import wait_for_start

    out = tmp_path / "A1"
    out.mkdir()
    (out / "start.pending").write_text("")
    record = {"path": str(tmp_path / "S0"), "candidates": [{"steps": 5}]}

    def choose():  # the other process finishes choosing
        (out / "start.json").write_text(json.dumps(record))
        (out / "start.pending").unlink()

    timer = threading.Timer(0.2, choose)
    timer.start()
    assert wait_for_start(out, scale=None, quiet=True, poll_s=0.01) == tmp_path / "S0"
    timer.join()


def test_a_start_chosen_under_other_settings_is_not_reused(tmp_path):
    from dataclasses import replace

    from experiments.paper.run import FULL
    from experiments.paper.steps import recorded_start, start_settings

    model = tmp_path / "S0"
    model.mkdir()
    (model / "config.json").write_text("{}")
    record = {"path": str(model), "candidates": [], "settings": start_settings(FULL)}
    (tmp_path / "start.json").write_text(json.dumps(record))
    assert recorded_start(tmp_path, FULL) == record
    assert recorded_start(tmp_path, replace(FULL, start_sft_steps=FULL.start_sft_steps + 1)) is None
    (model / "config.json").unlink()  # the chosen model was deleted since
    assert recorded_start(tmp_path, FULL) is None


def test_a_size_below_one_is_refused_with_its_flag_before_anything_trains(tmp_path, capsys):
    assert (
        main(["bench", "paper", "--quick", "--only", "A1", "--out", str(tmp_path / "p"), "--start-sft-steps", "-5"])
        != 0
    )
    assert "--start-sft-steps must be at least 1 (got -5)" in capsys.readouterr().err
    assert not (tmp_path / "p" / "A1").exists()
