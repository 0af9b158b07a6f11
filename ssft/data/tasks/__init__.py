"""Synthetic task families, by name: ``get_task("add4", marked=True)``."""

import inspect
from typing import Any

from ssft.data.tasks.add4 import Add4
from ssft.data.tasks.base import Problem, Task, extract_answer
from ssft.data.tasks.mult import Mult
from ssft.data.tasks.pathstar import PathStar
from ssft.errors import UserError

TASKS: dict[str, type[Task]] = {"add4": Add4, "mult": Mult, "pathstar": PathStar}


def get_task(name: str, **options: Any) -> Task:
    if name not in TASKS:
        raise UserError(f"task.name={name!r} is not a task; choose one of {sorted(TASKS)}")
    try:
        return TASKS[name](**options)
    except TypeError as e:  # an option the task does not have
        known = [p for p in inspect.signature(TASKS[name]).parameters if p != "marked"]
        given = {k: v for k, v in options.items() if k != "marked"}  # task.marked is its own setting
        raise UserError(f"task.options={given!r}: {e}; {name} takes {known}") from e


__all__ = ["TASKS", "Problem", "Task", "extract_answer", "get_task"]
