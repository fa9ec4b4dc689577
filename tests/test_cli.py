"""The command line: a real 3-step distillation, config files, one-line errors with exit code 2."""

import json
import subprocess
import sys

from mentor.cli import main


def test_cli_runs_a_three_step_distillation(tiny_dirs, prompts_file, tmp_path, capsys):
    out = tmp_path / "run"
    config = tmp_path / "opd.yaml"
    config.write_text("learning_rate: 0.001\ngroup_size: 2\nbatch_size: 2\nmax_new_tokens: 10\n")
    code = main(
        [
            "distill",
            "--config",
            str(config),
            "--student",
            tiny_dirs["student"],
            "--teacher",
            tiny_dirs["teacher"],
            "--prompts",
            prompts_file,
            "--steps",
            "3",
            "--output-dir",
            str(out),
            "--batch-size",
            "3",
            "--quiet",
        ]
    )
    assert code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    resolved = (out / "config.yaml").read_text()
    assert "learning_rate: 0.001" in resolved and "batch_size: 3" in resolved  # YAML, then flags on top
    assert (out / "final" / "model.safetensors").exists()


def test_cli_errors_are_one_line_with_exit_code_2(tiny_dirs, prompts_file, tmp_path):
    cases = [
        [
            "distill",
            "--student",
            tiny_dirs["student"],
            "--teacher",
            tiny_dirs["teacher"],
            "--prompts",
            prompts_file,
            "--learning-rate",
            "-1",
        ],
        [
            "distill",
            "--student",
            tiny_dirs["student"],
            "--teacher",
            tiny_dirs["teacher"],
            "--prompts",
            prompts_file,
            "--group-size",
            "0",
        ],
        ["distill", "--student", str(tmp_path / "nope"), "--teacher", tiny_dirs["teacher"], "--prompts", prompts_file],
        [
            "distill",
            "--student",
            tiny_dirs["student"],
            "--teacher",
            tiny_dirs["teacher"],
            "--prompts",
            str(tmp_path / "missing.jsonl"),
        ],
    ]
    for args in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "mentor", *args, "--output-dir", str(tmp_path / "x")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mentor: error:"), proc.stderr
        assert "Traceback" not in proc.stderr


def test_demo_quick_smoke(tmp_path):
    from mentor.recipes.demo import run_demo

    result = run_demo(out=str(tmp_path / "demo"), quick=True, opd_steps=2, quiet=True)
    assert result["teacher"] >= 0.95  # the shipped teacher is strong
    assert 0.2 <= result["before"] <= 0.7  # the shipped student is a weak start
    assert (tmp_path / "demo" / "accuracy.png").stat().st_size > 10_000
    assert (tmp_path / "demo" / "opd" / "final" / "model.safetensors").exists()
    assert "student after OPD" in (tmp_path / "demo" / "summary.md").read_text()


def test_bench_without_a_source_checkout_is_one_line(monkeypatch, capsys):
    import mentor.cli

    monkeypatch.setattr(mentor.cli, "_experiments_cli", lambda: None)  # an installed wheel: no experiments/
    assert main(["bench", "paper", "--quick"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "source checkout" in lines[0], lines


def test_bench_finds_the_checkouts_experiments_from_any_working_directory(tmp_path):
    code = (
        "from mentor.cli import build_parser; "
        "print(build_parser().parse_args(['bench', 'coe', '--quick']).func.__module__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "experiments.cli"
