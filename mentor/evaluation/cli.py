"""``mentor eval``: score a model or a run directory on a task's held-out split."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from mentor.errors import MentorError
from mentor.evaluation.accuracy import evaluate
from mentor.models.loading import load_model, load_tokenizer
from mentor.recipes.common import quiet_transformers
from mentor.tasks.base import get_task
from mentor.train.progress import console


def resolve_model_path(path: str) -> str:
    """A run directory evaluates its final model."""
    final = Path(path) / "final"
    return str(final) if (Path(path) / "config.yaml").exists() and final.exists() else path


def run_eval(args) -> dict:
    quiet_transformers()
    if args.size < 1 or args.samples < 1:
        raise MentorError("--size and --samples must be at least 1")
    path = resolve_model_path(args.model)
    task = get_task(args.task)
    tokenizer, model = load_tokenizer(path), load_model(path)
    problems = task.test_problems(args.size)
    greedy = args.samples == 1
    passed = [False] * len(problems)
    completions: list[str] = []
    for _ in range(args.samples):
        result = evaluate(model, tokenizer, task, problems, args.max_new_tokens, greedy=greedy,
                          temperature=args.temperature)
        passed = [a or b for a, b in zip(passed, result.correct)]
        completions = completions or result.completions
    accuracy = sum(passed) / len(problems)
    metric = "accuracy (greedy)" if greedy else f"pass@{args.samples} (T={args.temperature})"
    table = Table(title=f"{task.name}: {len(problems)} held-out problems")
    table.add_column("model")
    table.add_column(metric, justify="right")
    table.add_row(path, f"{accuracy:.1%}")
    console.print(table)
    for problem, completion in list(zip(problems, completions))[: args.show]:
        console.print(f"  {problem.prompt}{completion}   [dim](answer {problem.answer})[/]")
    return {"accuracy": accuracy}
