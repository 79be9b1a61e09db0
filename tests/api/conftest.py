"""Fixtures for the staff API tests."""

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from tests.api.helpers import token_client


@pytest.fixture
def api_as(db) -> Callable[..., APIClient]:
    """``api_as(user)``: a client authenticated by a fresh API token of ``user``."""
    return token_client


@pytest.fixture
def anonymous(db) -> APIClient:
    return APIClient()
