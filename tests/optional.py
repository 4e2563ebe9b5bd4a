"""Optional packages in tests: skipped where a package is missing, unless the run requires them.

``make test`` (and so CI) sets ``LIGHTNING_CAM_REQUIRE_OPTIONAL=1``: there a missing optional
package fails the tests that need it instead of skipping them, so every test runs for real.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

REQUIRE = "LIGHTNING_CAM_REQUIRE_OPTIONAL"


def require(module: str, install: str) -> ModuleType:
    """Import ``module``; when it is missing, skip (or fail under ``REQUIRE=1``) saying
    ``install``, how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        msg = f"{module} is not installed ({err}); {install}"
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{REQUIRE}=1 but {msg}")
        pytest.skip(msg)
