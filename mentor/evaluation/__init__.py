"""Evaluation: accuracy of a model on a task's held-out problems, graded by the task."""
