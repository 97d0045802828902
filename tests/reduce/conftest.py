"""Fixtures for the token-reduction tests (helpers live in reduce_models.py)."""

from __future__ import annotations

import pytest
from reduce_models import BACKBONES, make


@pytest.fixture(params=BACKBONES)
def backbone(request):
    return make(request.param)
