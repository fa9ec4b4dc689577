"""``mentor eval``: score a model or a run directory on a task's held-out split (greedy, or pass@k)."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

from rich.table import Table

from mentor.errors import MentorError
from mentor.evaluation.accuracy import evaluate
from mentor.models.loading import load_model, load_tokenizer
from mentor.recipes.common import quiet_transformers
from mentor.tasks.base import get_task
from mentor.tasks.graders import get_grader
from mentor.train.progress import console


def resolve_model_path(path: str) -> str:
    """A run directory evaluates its final model."""
    final = Path(path) / "final"
    return str(final) if (Path(path) / "config.yaml").exists() and final.exists() else path


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Unbiased pass@k from n samples of which ``correct`` passed (Chen et al. 2021, HumanEval)."""
    if n - correct < k:
        return 1.0
    return 1.0 - comb(n - correct, k) / comb(n, k)


class _Regraded:
    """A task whose grader is replaced (``--grader``), e.g. math-verify on a built-in task's answers."""

    def __init__(self, task, grader):
        self.task, self.name, self.grade = task, task.name, grader

    def test_problems(self, n):
        return self.task.test_problems(n)


def run_eval(args) -> dict:
    quiet_transformers()
    k = getattr(args, "k", 0) or args.samples
    if args.size < 1 or args.samples < 1 or not 1 <= k <= args.samples:
        raise MentorError("--size and --samples must be at least 1, and --k between 1 and --samples")
    path = resolve_model_path(args.model)
    task = get_task(args.task)  # a built-in name, or SCHEMA:PATH for a local gsm8k/math/humaneval/ifeval file
    if getattr(args, "grader", ""):
        task = _Regraded(task, get_grader(args.grader))
    tokenizer, model = load_tokenizer(path), load_model(path)
    problems = task.test_problems(args.size)
    greedy = args.samples == 1
    passes = [0] * len(problems)
    completions: list[str] = []
    for _ in range(args.samples):
        result = evaluate(model, tokenizer, task, problems, args.max_new_tokens, greedy=greedy,
                          temperature=args.temperature)
        passes = [count + ok for count, ok in zip(passes, result.correct)]
        completions = completions or result.completions
    accuracy = sum(pass_at_k(args.samples, c, k) for c in passes) / len(problems)
    metric = "accuracy (greedy)" if greedy else f"pass@{k} (n={args.samples}, T={args.temperature})"
    table = Table(title=f"{task.name}: {len(problems)} held-out problems")
    table.add_column("model")
    table.add_column(metric, justify="right")
    table.add_row(path, f"{accuracy:.1%}")
    console.print(table)
    for problem, completion in list(zip(problems, completions))[: args.show]:
        console.print(f"  {problem.prompt}{completion}   [dim](answer {problem.answer})[/]")
    record = {"task": task.name, "metric": metric, "accuracy": accuracy, "problems": len(problems), "model": path}
    if path != args.model:  # a run directory: keep the result next to its metrics
        with (Path(args.model) / "eval.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    return record
