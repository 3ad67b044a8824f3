"""One adapter per task kind (kinds/base.py is the interface the stages call)."""

from __future__ import annotations

from freeal_ray.kinds.base import TaskKind


def kind_for(task) -> TaskKind:
    """The adapter for a resolved task: NER for an entity task, else text classification."""
    from freeal_ray.task import EntityTask

    if isinstance(task, EntityTask):
        from freeal_ray.kinds.entities import Entities

        return Entities(task)
    from freeal_ray.kinds.classification import Classification

    return Classification(task)
