"""Robustness tests (issue 7): all but the engine fuzzing run real mounts as
root, like tests/integration."""

import os

import pytest


@pytest.fixture(autouse=True)
def _root_only(request):
    if os.geteuid() != 0 and not request.module.__name__.endswith("test_engine_fuzz"):
        pytest.skip("needs root: mounts kdbusfs and runs clients as other uids")
