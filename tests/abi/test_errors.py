import pickle
from errno import EBADFD, EINVAL

import pytest

from kdbusfs.abi import KdbusError, fail


def test_kdbus_error():
    e = KdbusError(EINVAL, "bad item")
    assert e.errno == EINVAL and e.msg == "bad item" and e.name == "EINVAL"
    assert str(e).startswith("EINVAL (") and str(e).endswith(": bad item")
    assert not isinstance(e, OSError)
    again = pickle.loads(pickle.dumps(e))
    assert (again.errno, again.msg) == (EINVAL, "bad item")


def test_fail():
    with pytest.raises(KdbusError) as e:
        fail(EBADFD)
    assert e.value.errno == EBADFD and e.value.msg == "" and "EBADFD" in str(e.value)
