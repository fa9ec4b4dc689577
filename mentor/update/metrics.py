"""Metrics that carry their reduction: how a number of one micro-batch becomes the step's number.

A loss returns its metrics as plain floats (a token sum already divided by the step's token count: summed
over micro-batches and processes, averaged over substeps) or as a ``Metric`` that says otherwise:

    {"ratio_mean": ..., "ratio_max": Metric(ratio.max(), reduce="max")}

``max`` keeps the largest value (over micro-batches, processes and substeps); ``mean`` averages the
micro-batches' values over all processes, then over substeps. The logged name is the key, whatever it is.
"""

from __future__ import annotations

from collections.abc import Callable

REDUCTIONS = ("sum", "mean", "max")

AllReduce = Callable[..., list[float]]  # (values, op="sum"|"max") -> the values over all processes


class Metric(float):
    """A float that says how it is reduced; it logs, compares and serialises as the float it is."""

    reduce: str

    def __new__(cls, value: float, reduce: str = "sum") -> Metric:
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)} (got {reduce!r})")
        metric = super().__new__(cls, value)
        metric.reduce = reduce
        return metric


def reduction(value: float) -> str:
    """``value``'s reduction: its own for a ``Metric``, a sum for a plain number."""
    return getattr(value, "reduce", "sum")


class MicroBatchMetrics:
    """One substep's metrics, gathered over its micro-batches, then over processes (``all_reduce``)."""

    def __init__(self):
        self.values: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.reduce: dict[str, str] = {}

    def add(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            how = self.reduce.setdefault(key, reduction(value))
            old = self.values.get(key, 0.0)
            self.values[key] = max(old, float(value)) if how == "max" else old + float(value)
            self.counts[key] = self.counts.get(key, 0) + 1

    def over_processes(self, all_reduce: AllReduce) -> dict[str, float]:
        """Sums and means over processes, maxima as maxima; each value a ``Metric`` with its reduction."""
        keys = sorted(self.values)
        maxed = [k for k in keys if self.reduce[k] == "max"]
        added = [k for k in keys if self.reduce[k] != "max"]
        averaged = [k for k in added if self.reduce[k] == "mean"]
        reduced = dict(zip(maxed, all_reduce([self.values[k] for k in maxed], op="max")))
        sums = all_reduce([self.values[k] for k in added] + [float(self.counts[k]) for k in averaged])
        reduced.update(zip(added, sums[: len(added)]))
        for key, count in zip(averaged, sums[len(added) :]):
            reduced[key] /= max(count, 1.0)
        return {key: Metric(reduced[key], self.reduce[key]) for key in keys}


class SubstepMetrics:
    """A step's metrics over its substeps: maxima kept, the rest averaged over all ``substeps`` (a skipped
    substep adds nothing, as its update did nothing)."""

    def __init__(self, substeps: int, **start: float):
        self.substeps = substeps
        self.values: dict[str, float] = dict(start)

    def name(self, keys) -> None:
        """Log ``keys`` even if no substep adds them (every substep was skipped)."""
        for key in keys:
            self.values.setdefault(key, 0.0)

    def add(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            old = self.values.get(key, 0.0)
            self.values[key] = max(old, float(value)) if reduction(value) == "max" else old + value / self.substeps
