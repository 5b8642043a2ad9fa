"""Models: registered bodies (``resnet20``, ``convnet``, ``resnet18``), per-task heads and BN buffers,
image tasks."""

from largemeta.models.bodies import BasicBlock, CifarResNet, ConvNet, ZeroPadShortcut, count_parameters
from largemeta.models.factory import MODELS, create_model, list_models, register_model
from largemeta.models.functional import HEAD, apply, features, init_head, split_state, to_channels_last
from largemeta.models.synthetic import RandomImageSampler
from largemeta.models.task import ImageTask, Sampler

__all__ = [
    "HEAD", "MODELS", "BasicBlock", "CifarResNet", "ConvNet", "ImageTask", "RandomImageSampler",
    "Sampler", "ZeroPadShortcut", "apply",
    "count_parameters", "create_model", "features", "init_head", "list_models", "register_model",
    "split_state", "to_channels_last",
]
