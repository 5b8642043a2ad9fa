"""Fixtures for the model/execution tests."""

from __future__ import annotations

import pytest

from largemeta.testing import image_problem


@pytest.fixture
def problem():
    return image_problem()
