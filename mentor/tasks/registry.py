"""Every built-in task by name, without importing any task module until one is asked for.

A static table instead of decorators: a decorator registers a task only once its module has been imported,
so whether a name was known depended on what the caller happened to import first.
"""

from __future__ import annotations

import importlib

from mentor.errors import MentorError
from mentor.tasks.base import Task
from mentor.tasks.loaders import task_from_spec

# name -> "module:class"; the class is built with no arguments
BUILTIN_TASKS = {
    "arithmetic": "mentor.tasks.arithmetic:ArithmeticTask",
    "coe_general": "mentor.tasks.coe_tasks:GeneralTask",
    "coe_math": "mentor.tasks.coe_tasks:MathTask",
    "coe_coding": "mentor.tasks.coe_tasks:CodingTask",
    "coe_pot": "mentor.tasks.coe_tasks:PotTask",
    "coe_facts": "mentor.tasks.coe_tasks:FactsTask",
    "coe_operators": "mentor.tasks.coe_tasks:OperatorsTask",
    "coe_functions": "mentor.tasks.coe_tasks:FunctionsTask",
    "coe_op_function": "mentor.tasks.coe_tasks:OperatorFunctionTask",
    "chains": "mentor.tasks.chains:ChainTask",
    "chains_val": "mentor.tasks.chains:ChainValidationTask",
}


def task_names() -> list[str]:
    """The names of every built-in task."""
    return sorted(BUILTIN_TASKS)


def get_task(name: str) -> Task:
    """A built-in task by name, or a benchmark file as a task (``SCHEMA:PATH``, e.g. ``gsm8k:test.jsonl``)."""
    file_task = task_from_spec(name)
    if file_task is not None:
        return file_task
    if name not in BUILTIN_TASKS:
        raise MentorError(f"unknown task {name!r}: choose one of {', '.join(task_names())}")
    module, cls = BUILTIN_TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()
