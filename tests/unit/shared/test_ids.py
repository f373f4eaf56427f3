import uuid

import pytest

from shared.ids import uuid5

NAMESPACE = uuid.UUID("0b6f0d64-8d0c-4c43-a7d4-6a2b1d6f3e90")


@pytest.mark.parametrize("name", ["", "win-back\x1facct-1\x1fsig-1", "Émile@exämple.test", "x" * 300, "\x00\x1f\n"])
def test_uuid5_is_the_standard_librarys(name):
    assert uuid5(NAMESPACE, name) == str(uuid.uuid5(NAMESPACE, name))
    assert uuid5(uuid.NAMESPACE_URL, name) == str(uuid.uuid5(uuid.NAMESPACE_URL, name))
