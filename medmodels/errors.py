"""Errors a user can cause. ``str(error)`` is a complete, user-facing sentence.

The CLI prints it on one line and the dashboard shows it in the page; any other
exception type reaching a user is a bug.
"""


class MedModelsError(Exception):
    """Base class for every error caused by input, configuration or missing files."""


class ImageReadError(MedModelsError):
    """An image could not be decoded or is outside the accepted limits."""


class DatasetError(MedModelsError):
    """A labelled set (folder, zip, CSV) is malformed or does not match the task."""


class WeightsError(MedModelsError):
    """Weights are missing, tampered with, not safetensors, or for another architecture."""


class UnknownModelError(MedModelsError):
    """A task or model name is not in the registry."""
