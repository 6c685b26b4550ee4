"""medmodels: compact medical image classifiers of five papers, their weights, metrics and explanations."""
from medmodels.zoo import (  # noqa: F401
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

__version__ = "0.1.0"
