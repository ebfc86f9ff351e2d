from __future__ import annotations

import pytest

from guest.build import ensure_built
from guest.progress import Progress


@pytest.fixture(scope="session")
def built():
    """The guest build for the current tree (built on first use: ~10 s with a warm download cache)."""
    return ensure_built(progress=Progress())
