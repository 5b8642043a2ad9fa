"""Models: bodies (``resnet20``, ``convnet``, ``resnet18`` and any registered or named backbone), per-task
heads and BatchNorm buffers, image tasks."""

from largemeta.models.bodies import BasicBlock, CifarResNet, ConvNet, ZeroPadShortcut, count_parameters
from largemeta.models.factory import (
    ENTRY_POINT_GROUP,
    MODELS,
    create_model,
    feature_size,
    is_code_reference,
    list_models,
    register_model,
)
from largemeta.models.functional import HEAD, apply, features, init_head, split_state
from largemeta.models.task import BatchSource, ImageTask

__all__ = [
    "ENTRY_POINT_GROUP",
    "HEAD",
    "MODELS",
    "BasicBlock",
    "BatchSource",
    "CifarResNet",
    "ConvNet",
    "ImageTask",
    "ZeroPadShortcut",
    "apply",
    "count_parameters",
    "create_model",
    "feature_size",
    "features",
    "init_head",
    "is_code_reference",
    "list_models",
    "register_model",
    "split_state",
]

_RENAMED = {"BatchSampler": "BatchSource"}  # 0.3: removed in 0.4


def __getattr__(name: str):
    if name in _RENAMED:
        import warnings

        new = _RENAMED[name]
        warnings.warn(
            f"largemeta.models.{name} is deprecated: use largemeta.models.{new} (removed in 0.4)",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[new]
    raise AttributeError(f"module 'largemeta.models' has no attribute {name!r}")
