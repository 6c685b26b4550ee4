"""The model zoo: architectures of the five papers behind one registry."""
from medmodels.zoo.registry import (  # noqa: F401
    ModelEntry,
    Preprocess,
    TaskSpec,
    count_parameters,
    create_model,
    get_entry,
    get_task,
    list_models,
    list_tasks,
)
