"""The model zoo: architectures of the five papers behind one registry.

As in timm's ``models/__init__.py``, importing the package imports every architecture
module (each registers its factories with ``@register_arch``) and then the catalog (the
tasks and the (task, model) entries). ``zoo.registry`` itself imports nothing from the zoo,
so the dependencies run one way: ``__init__`` -> architectures, catalog -> registry.
A new architecture module is added to the import line below.
"""
from medmodels.zoo import efficientnet_lite, kd, quadsnet, shallow, torchvision_nets, unet  # noqa: F401  (register archs)
from medmodels.zoo import catalog  # noqa: F401,I001  (tasks and entries; after the archs it names)
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
