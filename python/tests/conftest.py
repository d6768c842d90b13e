import os
import pathlib

import pytest

REPO = pathlib.Path(os.environ.get("MOEGEN_REPO", pathlib.Path(__file__).resolve().parents[2]))
# The C++ tools of the same build (tests/python/run-python-tests.sh sets it).
BIN = pathlib.Path(os.environ.get("MOEGEN_BIN", REPO / "build" / "bin"))


@pytest.fixture
def template():
    return lambda name: str(REPO / "templates" / f"{name}.yaml")
