from __future__ import annotations

import pytest

from tests.system import image as images
from tests.system.fleet import Fleet
from tests.system.kinds import sandbox  # noqa: F401 (the fixture, for every module here)
from tests.system.namespaces import unsupported_reason

REASON = unsupported_reason()


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/system/" in str(item.fspath):
            item.add_marker(pytest.mark.system)
            if REASON:
                item.add_marker(pytest.mark.skip(reason=f"real machines cannot boot here: {REASON}"))


@pytest.fixture(scope="session")
def image():
    """mgmtd as `make install-service` installs it, once per run."""
    built = images.build()
    yield built
    images.remove(built)


@pytest.fixture
def make_fleet(image, tmp_path):
    """Fleets of machines on disks under the test's directory; all powered off at
    the end, and a machine process left over fails the test."""
    fleets: list[Fleet] = []

    def make(count: int, **options) -> Fleet:
        fleet = Fleet(tmp_path / f"fleet{len(fleets) + 1}", image, count, **options)
        fleets.append(fleet)
        return fleet

    yield make
    errors = []
    for fleet in fleets:
        try:
            fleet.close()
        except Exception as err:  # noqa: BLE001 (every fleet is closed, then the first error raised)
            errors.append(err)
    assert not errors, errors
