"""Bodies by name: the registry of built-in bodies and :func:`create_model`.

Options are offered, not imposed: a call site passes everything it knows
(``create_model(name, in_channels=c, width=w)``) and each factory receives the options its signature names
(all of them if it takes ``**kwargs``), so no call site needs to know which body has a width. Options set to
``None`` count as not given: the factory's default applies.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

from largemeta.registry import Registry

Factory = Callable[..., nn.Module]

MODELS: Registry[Factory] = Registry("model")
"""The built-in bodies (and any registered in this process with :func:`register_model`)."""

register_model = MODELS.register


def create_model(name: str, **options: Any) -> nn.Module:
    """Build the registered body ``name`` with those of ``options`` its factory takes.

    Example: ``create_model("resnet18", in_channels=1, width=16)`` builds ResNet-18 for grey images (it has no
    width; ``convnet`` and ``resnet20`` would use it). An unknown name is a one-line :class:`UserError`.
    """
    return MODELS.create(name, **{k: v for k, v in options.items() if v is not None})


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching the shell-style ``pattern``, sorted."""
    return [n for n in MODELS.names() if fnmatch.fnmatchcase(n, pattern)]
