"""The sample log, the per-token penalty view (``mentor inspect``), the run report and the plain progress lines."""

from __future__ import annotations

import html
import io
import json
import re
import shutil

import pytest
import torch
from rich.console import Console

from mentor.report.penalty import concentration, forking_tokens, select, token_penalties
from mentor.report.samples import MAX_LOGGED_STEPS, SampleLog, is_logged_step, logged_steps_stride


def _config(tiny_dirs, out, **overrides):
    from mentor.config import DistillConfig

    base = dict(
        student=tiny_dirs["student"],
        teacher=tiny_dirs["teacher"],
        task="arithmetic",
        output_dir=str(out),
        steps=5,
        batch_size=2,
        group_size=2,
        max_new_tokens=6,
        learning_rate=1e-3,
        eval_size=2,
        sample_log_every=2,
        sample_log_rows=3,
        seed=4,
        quiet=True,
    )
    base.update(overrides)
    return DistillConfig(**base)


@pytest.fixture(scope="module")
def opd_run(tiny_dirs, tmp_path_factory):
    from mentor.recipes.distill import run_distill

    out = tmp_path_factory.mktemp("report") / "opd"
    run_distill(_config(tiny_dirs, out))
    return out


def test_samples_are_logged_bounded_with_per_token_numbers(opd_run, tiny_dirs):
    records = SampleLog(opd_run).read()
    # steps 1 (first), 2, 4 and 5 (last); 3 rows of the 4 sequences of each
    assert sorted({r["step"] for r in records}) == [1, 2, 4, 5]
    assert [sum(r["step"] == s for r in records) for s in (1, 2, 4, 5)] == [3, 3, 3, 3]
    for r in records:
        n = len(r["token_ids"])
        assert 1 <= n <= 6
        assert len(r["tokens"]) == len(r["sampler_logprobs"]) == len(r["teacher_logprobs"]) == n
        assert len(r["teacher_top1_ids"]) == len(r["teacher_top1"]) == n  # the in-process teacher's choice
        assert all(q <= 0 for q in r["sampler_logprobs"]) and all(p <= 0 for p in r["teacher_logprobs"])
        assert set(r["completion"]) <= set("".join(r["tokens"]))  # the text shown skips special tokens
    # the report was written at the end of the run
    assert (opd_run / "summary.md").is_file() and (opd_run / "report" / "training.png").is_file()


def test_teacher_top1_is_the_argmax_of_its_distribution(tiny_dirs):
    from mentor.models.loading import load_model
    from mentor.score.local import LocalTeacher

    model = load_model(tiny_dirs["teacher"], "float32")
    teacher = LocalTeacher(model, pad_id=0)
    seq = [5, 9, 12, 7, 3, 8, 11]
    [(logprobs, top1)] = teacher.logprobs_and_top1([seq], score_from=[3])
    [expected] = teacher.compute_logprobs([seq], score_from=[3])
    assert torch.allclose(logprobs[3:], expected[3:], atol=1e-5)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([seq])).logits[0]
    assert top1[3:].tolist() == logits[2:-1].argmax(-1).tolist() and top1[:3].tolist() == [0, 0, 0]


def test_stride_keeps_a_long_run_bounded():
    assert logged_steps_stride(10, 100) == 10 and logged_steps_stride(0, 100) == 0
    steps = 100_000
    logged = [s for s in range(1, steps + 1) if is_logged_step(s, 10, steps)]
    assert len(logged) <= MAX_LOGGED_STEPS + 2 and logged[0] == 1 and logged[-1] == steps
    assert not any(is_logged_step(s, 0, 50) for s in range(1, 51))


def test_inspect_shades_each_token_by_sampler_minus_teacher(opd_run, tmp_path, capsys):
    from mentor.cli import main

    out = tmp_path / "view"
    assert main(["inspect", str(opd_run), "--steps", "all", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "top 1% carry" in printed and "forking tokens" in printed
    page = (out / "penalty.html").read_text(encoding="utf-8")
    assert "<script" not in page and "http" not in page  # self-contained
    assert (out / "penalty.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = [float(x) for x in re.findall(r"penalty ([+-][0-9.]+) nats", html.unescape(page))]
    records = SampleLog(opd_run).read()
    expected = [q - p for r in records for q, p in zip(r["sampler_logprobs"], r["teacher_logprobs"])]
    assert len(shown) == len(expected) and len(shown) > 0
    assert all(abs(a - b) <= 5e-4 + 1e-9 for a, b in zip(shown, expected))  # shown to 3 decimals: half a unit
    summary = json.loads((out / "penalty_summary.json").read_text())
    assert set(summary["steps"]) == {"1", "2", "4", "5"} and summary["run"]["tokens"] == len(expected)


def test_worst_and_best_are_ranked_by_mean_penalty(opd_run):
    records = SampleLog(opd_run).read()
    means = sorted(sum(token_penalties(r)) / len(r["tokens"]) for r in records)
    worst, best = select(records, worst=2), select(records, best=1)
    assert [round(sum(token_penalties(r)) / len(r["tokens"]), 9) for r in worst] == [
        round(m, 9) for m in means[::-1][:2]
    ]
    assert round(sum(token_penalties(best[0])) / len(best[0]["tokens"]), 9) == round(means[0], 9)
    assert {r["step"] for r in select(records)} == {5}  # default: the last logged step


def test_concentration_on_a_known_case():
    penalties = [10.0] + [1.0] * 99 + [-5.0] * 100  # 200 tokens; negatives count as 0
    shares = concentration(penalties)
    assert shares["top_1%"] == pytest.approx((10 + 1) / 109)  # 2 tokens are 1% of 200
    assert shares["top_10%"] == pytest.approx((10 + 19) / 109)  # 20 tokens
    assert concentration([0.0, -1.0]) == {"top_1%": 0.0, "top_10%": 0.0}


def test_forking_tokens_count_the_most_penalised():
    record = {
        "step": 1,
        "tokens": ["a", "b", "a", "c"] * 5,
        "sampler_logprobs": [0.0] * 20,
        "teacher_logprobs": [-5.0, -0.1, -4.0, -0.2] * 5,
        "teacher_top1": ["x", "b", "y", "c"] * 5,
    }
    rows = forking_tokens([record], top_fraction=0.5)
    assert rows[0]["token"] == "a" and rows[0]["count"] == 10
    assert rows[0]["mean_penalty"] == pytest.approx(4.5) and rows[0]["teacher_prefers"] in ("x", "y")


def test_report_command_writes_summary_and_plots(opd_run, tmp_path, capsys):
    from mentor.cli import main

    out = tmp_path / "report"
    assert main(["report", str(opd_run), "--out", str(out)]) == 0
    text = (out / "summary.md").read_text(encoding="utf-8")
    assert "on-policy distillation" in text and "reverse_kl" in text and "What the teacher penalises" in text
    assert "report/training.png" in text and "FLOPs" in text
    for name in ("training.png", "penalty.png", "penalty.html"):
        assert (out / "report" / name).stat().st_size > 0
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["inspect", str(opd_run), "--steps", "3"]) == 2  # step 3 was not logged
    assert "was not logged" in capsys.readouterr().err


def test_resume_truncates_samples_and_rewrites_them_identically(tiny_dirs, tmp_path):
    from mentor.recipes.distill import run_distill

    out = tmp_path / "run"
    config = _config(tiny_dirs, out, steps=4, save_every=2, keep_checkpoints=3, sample_log_every=1)
    run_distill(config)
    complete = (out / "samples.jsonl").read_text()
    # a run killed after step 3 was logged, with step 2 its last checkpoint
    shutil.rmtree(out / "checkpoints" / "step_00000004")
    shutil.rmtree(out / "final")
    lines = complete.splitlines(keepends=True)
    (out / "samples.jsonl").write_text("".join(lines[: 3 * 3]) + lines[9][:20])  # steps 1-3, a torn line
    run_distill(config)
    assert (out / "samples.jsonl").read_text() == complete


def test_sample_log_truncate():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        log = SampleLog(tmp)
        log.append([{"step": s, "tokens": ["a"]} for s in range(1, 7)])
        log.truncate(4)
        assert [r["step"] for r in log.read()] == [1, 2, 3, 4]


def test_progress_without_a_terminal_prints_plain_lines():
    from mentor.train.progress import TrainingProgress

    buffer = io.StringIO()
    with TrainingProgress(25, "opd", ("loss",), out=Console(file=buffer, width=80), every=10, completed=0) as bar:
        for _ in range(25):
            bar.update({"loss": 0.5, "step": 1})
    lines = buffer.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["1/25", "10/25", "20/25", "25/25"]
    assert all(
        line.startswith("opd step ") and "elapsed" in line and "eta" in line and line.endswith("loss=0.5")
        for line in lines
    )
    assert "\x1b" not in buffer.getvalue()


def test_progress_bar_keeps_its_counters_in_80_columns():
    from mentor.train.progress import TrainingProgress

    buffer = io.StringIO()
    console = Console(file=buffer, width=80, force_terminal=True, color_system=None)
    keys = ("loss", "reverse_kl", "accuracy", "entropy", "completion_length", "grad_norm")
    with TrainingProgress(1000, "opd", keys, out=console, completed=0) as bar:
        bar.update({k: 0.123456 for k in keys})
    last = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue()).replace("\r", "\n").strip().splitlines()[-1]
    assert len(last) <= 80 and "1/1000" in last and re.search(r"\d:\d\d:\d\d [0-9-]:[0-9-]{2}:[0-9-]{2} ", last)
    assert "loss=0.123" in last and last.endswith("\u2026")  # the metrics are cut, not the counters


def test_report_of_a_coe_directory_links_its_routing_figure(tmp_path):
    from mentor.report.run_report import write_report

    stage2 = tmp_path / "coe" / "stage2"
    stage2.mkdir(parents=True)
    history = [
        {"step": s, "loss": 2.0 / s, "entropy": 1.0, "grad_norm": 0.5, "skipped_steps": int(s > 3), "router_loss": 0.1}
        for s in range(1, 6)
    ]
    (stage2 / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    (tmp_path / "coe" / "inspect").mkdir()
    (tmp_path / "coe" / "inspect" / "routing.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    files = write_report(tmp_path / "coe")  # the CoE directory resolves to its router-training run
    text = (stage2 / "summary.md").read_text()
    assert "![routing](../inspect/routing.png)" in text and "Skipped updates (non-finite loss or gradient): 1" in text
    assert (stage2 / "report" / "training.png").is_file() and "penalty_png" not in files
