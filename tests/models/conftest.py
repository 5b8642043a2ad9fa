"""Fixtures for the model/execution tests."""

from __future__ import annotations

import pytest
from model_helpers import image_problem


@pytest.fixture
def problem():
    return image_problem()
