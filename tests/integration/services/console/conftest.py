"""Fixtures of the console tests: they stand on the shared seeded database (the root
conftest's console_world) instead of the per-test empty one; each test gets its own app
and clock over it."""

from __future__ import annotations

import httpx
import pytest

from shared.clock import SimulatedClock


@pytest.fixture
def settings(console_world):
    return console_world.settings


@pytest.fixture
def session_factory(console_world):
    return console_world.session_factory


@pytest.fixture
def clock(console_world):
    return SimulatedClock(console_world.now)


@pytest.fixture
def keys(console_world):
    return console_world.keys


@pytest.fixture
def seeded(console_world):
    return console_world.seeded


@pytest.fixture
async def api(settings, clock, session_factory):
    from services.wiring.app import create_app

    app = create_app(settings, clock, session_factory)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://touchline.test") as client:
        yield client
    app.state.ctx.close()
