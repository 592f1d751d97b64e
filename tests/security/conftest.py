"""Fixtures of the security tests: real mounts from tests/integration."""

from tests.integration.conftest import mount, mount_base  # noqa: F401  (re-exported)

import pytest

from .agents import agents as _agents


@pytest.fixture
def agent(mount):  # noqa: F811
    """agent(uid=..., prefix=[...]) -> an Agent, closed after the test (and
    before the mount stops: their open files would keep the server busy)."""
    make = _agents()
    try:
        yield make
    finally:
        for a in make.all:
            a.close()
