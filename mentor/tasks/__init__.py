"""Tasks: problems with a verifiable answer and the grader that checks a completion."""

from mentor.tasks.base import Problem, Task, get_task

__all__ = ["Problem", "Task", "get_task"]
