import os
import pathlib

import pytest

REPO = pathlib.Path(os.environ.get("MOEGEN_REPO", pathlib.Path(__file__).resolve().parents[2]))


@pytest.fixture
def template():
    return lambda name: str(REPO / "templates" / f"{name}.yaml")
