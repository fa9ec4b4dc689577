"""Training progress: a rich bar on a terminal, plain lines in a log.

On a terminal the step counter, elapsed time and ETA keep their width in an 80-column window: the metrics
take what is left and are cut with an ellipsis, never the counters. Without a terminal (output to a file,
CI) a plain line is printed every ``every`` steps (and at the first and the last step), which a log keeps
readable where a redrawn bar would be a wall of control characters.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column

console = Console(stderr=True)


class TrainingProgress:
    def __init__(
        self,
        total: int,
        description: str,
        keys: tuple[str, ...],
        enabled: bool = True,
        completed: int = 0,
        every: int = 10,
        out: Console | None = None,
    ):
        self.keys, self.total, self.description, self.every = keys, total, description, every
        self.out = out or console
        self.completed = self.started_at = completed
        self.plain = enabled and not self.out.is_terminal
        self.enabled = enabled
        self.start_time = time.monotonic()

        def fixed(width: int | None = None) -> Column:
            return Column(no_wrap=True, min_width=width)

        self.progress = Progress(
            TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True, max_width=12)),
            BarColumn(bar_width=16, table_column=fixed()),
            MofNCompleteColumn(table_column=fixed()),
            TimeElapsedColumn(table_column=fixed()),
            TimeRemainingColumn(table_column=fixed()),
            TextColumn(
                "{task.fields[metrics]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1, min_width=0)
            ),
            console=self.out,
            disable=not enabled or self.plain,
            transient=False,
            expand=True,
        )
        self.task = self.progress.add_task(description, total=total, completed=completed, metrics="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def update(self, metrics: dict) -> None:
        shown = " ".join(f"{k}={_fmt(metrics[k])}" for k in self.keys if k in metrics)
        self.completed += 1
        self.progress.update(self.task, advance=1, metrics=shown)
        if (
            self.plain
            and self.every > 0
            and (
                self.completed % self.every == 0
                or self.completed == self.total
                or self.completed == self.started_at + 1
            )
        ):
            self.out.file.write(self.plain_line(shown) + "\n")
            self.out.file.flush()

    def plain_line(self, shown: str) -> str:
        """``opd step 10/100 elapsed 0:01:05 eta 0:09:45 loss=0.12 reverse_kl=0.3``"""
        elapsed = time.monotonic() - self.start_time
        done = self.completed - self.started_at
        left = self.total - self.completed
        eta = _clock(elapsed / done * left) if done else "-:--:--"
        line = f"{self.description} step {self.completed}/{self.total} elapsed {_clock(elapsed)} eta {eta} {shown}"
        return line.rstrip()


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
