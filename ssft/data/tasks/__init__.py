"""Synthetic task families, by name: ``get_task("add4", marked=True)``."""

from ssft.data.tasks.add4 import Add4
from ssft.data.tasks.base import Problem, Task, extract_answer
from ssft.data.tasks.mult import Mult
from ssft.errors import UserError

TASKS: dict[str, type[Task]] = {"add4": Add4, "mult": Mult}


def get_task(name: str, **options: object) -> Task:
    if name not in TASKS:
        raise UserError(f"task.name={name!r} is not a task; choose one of {sorted(TASKS)}")
    return TASKS[name](**options)


__all__ = ["TASKS", "Problem", "Task", "extract_answer", "get_task"]
