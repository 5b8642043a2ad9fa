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
from largemeta.models.task import BatchSampler, ImageTask

__all__ = [
    "ENTRY_POINT_GROUP",
    "HEAD",
    "MODELS",
    "BasicBlock",
    "BatchSampler",
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
