"""Griffe extension for the API pages: the docstrings' Sphinx roles (``:class:`X```, ``:func:`~a.b```) are
read as the code spans they name, so that mkdocstrings renders ``X`` rather than the role's markup."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj|const|py:\w+):`~?([^`]+)`")


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
