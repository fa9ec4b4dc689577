"""A rich progress bar that shows the metrics a person watches while training."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class TrainingProgress:
    def __init__(self, total: int, description: str, keys: tuple[str, ...], enabled: bool = True,
                 completed: int = 0):
        self.keys = keys
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"),
                                 console=console, disable=not enabled, transient=False)
        self.task = self.progress.add_task(description, total=total, completed=completed, metrics="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def update(self, metrics: dict) -> None:
        shown = " ".join(f"{k}={_fmt(metrics[k])}" for k in self.keys if k in metrics)
        self.progress.update(self.task, advance=1, metrics=shown)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
