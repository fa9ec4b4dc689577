"""The compute ledger of a training run: cumulative FLOPs by who (student | teacher | reference) and what
(sample | score | train), counted with ``mentor.evaluation.flops``.

Its names are ``flops_<who>_<what>``; ``metrics.jsonl`` holds the cumulative value of each after every step.
"""

from __future__ import annotations

from torch import nn

from mentor.evaluation.flops import MatmulParams, forward_flops, training_flops
from mentor.evaluation.tables import markdown_table

# metric names the algorithms report (tokens pushed through a model in ``collect``) -> ledger entry
TOKEN_METRICS = {
    "sampled_tokens": ("student", "sample"),
    "teacher_tokens": ("teacher", "score"),
    "reference_tokens": ("reference", "score"),
}


class ComputeLedger:
    """Cumulative FLOPs of one run. The trainer calls :meth:`record_step` once per optimizer batch."""

    def __init__(
        self,
        teacher_params: int | None = None,
        reference_params: int | None = None,
        offline: dict[str, float] | None = None,
    ):
        self.student = MatmulParams(0, 0)
        self.params = {"student": 0, "teacher": teacher_params, "reference": reference_params}
        self.totals: dict[str, float] = {"flops_student_train": 0.0}
        # costs paid before training, e.g. the teacher sampling an SFT data set (cached, paid once)
        self.totals.update(offline or {})
        self.tokens_trained = 0

    def bind_student(self, model: nn.Module) -> None:
        """Measure the student as it is trained (after LoRA is applied: that fixes the trainable set)."""
        self.student = MatmulParams.of(model)
        self.params["student"] = self.student.total

    def record_step(self, trained_tokens: int, collect_metrics: dict, world_size: int = 1) -> dict[str, float]:
        """Add one step's FLOPs; returns the cumulative ledger (for ``metrics.jsonl``)."""
        self.totals["flops_student_train"] += training_flops(self.student, trained_tokens)
        self.tokens_trained += trained_tokens
        if "teacher_flops" in collect_metrics:  # several teachers of different sizes: they count for themselves
            self.totals["flops_teacher_score"] = (
                self.totals.get("flops_teacher_score", 0.0) + collect_metrics["teacher_flops"] * world_size
            )
        for metric, (who, what) in TOKEN_METRICS.items():
            if metric == "teacher_tokens" and "teacher_flops" in collect_metrics:
                continue
            tokens = collect_metrics.get(metric)
            if tokens is None:
                continue
            params = self.params[who]
            if params is None:  # e.g. a remote teacher of unknown size: tokens are still logged
                continue
            key = f"flops_{who}_{what}"
            # the trainer averages per-process metrics: times world_size gives the sum over processes
            self.totals[key] = self.totals.get(key, 0.0) + forward_flops(params, tokens * world_size)
        return self.snapshot()

    def snapshot(self) -> dict[str, float]:
        out = dict(self.totals)
        out["flops_teacher"] = sum(v for k, v in self.totals.items() if k.startswith("flops_teacher_"))
        out["flops_student"] = sum(v for k, v in self.totals.items() if k.startswith("flops_student_"))
        out["flops_total"] = sum(v for k, v in self.totals.items() if k.startswith("flops_") and k.count("_") == 2)
        return out

    def restore(self, last_record: dict) -> None:
        """Resume: continue the cumulative counts from the last logged step."""
        for key, value in last_record.items():
            if key.startswith("flops_") and key.count("_") == 2:
                self.totals[key] = float(value)


def summary_table(record: dict) -> str:
    """The paper's compute table for one run (markdown)."""
    rows = [
        ("teacher", "flops_teacher_sample", "flops_teacher_score", None),
        ("student", "flops_student_sample", None, "flops_student_train"),
        ("reference", None, "flops_reference_score", None),
    ]
    cells = []
    for who, sample, score, train in rows:
        values = [record.get(k, 0.0) if k else 0.0 for k in (sample, score, train)]
        if who == "reference" and not any(values):
            continue
        cells.append([who, *(f"{v:.3g}" for v in values), f"{sum(values):.3g}"])
    return markdown_table(["model", "sampling", "scoring", "training", "total"], cells)
