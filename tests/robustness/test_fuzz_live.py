"""The live fuzzer (kdbusfs/tools/fuzz.py, scripts/fuzz), a short run.

KDBUSFS_FUZZ_SECONDS sets its length (default 20 s); the long run is by
hand: scripts/fuzz --seconds 600.
"""

import os

import pytest

from kdbusfs.tools import fuzz

pytestmark = pytest.mark.timeout(150, method="thread")

SECONDS = float(os.environ.get("KDBUSFS_FUZZ_SECONDS", 20))


def test_fuzz_every_ioctl_on_every_fd_kind():
    res = fuzz.run(SECONDS, workers=2, child_seconds=4.0)
    report = fuzz.summary(res)
    print(report)
    assert res["crashes"] == [], report
    assert res["hangs"] == [] and res["unkillable"] == 0, report
    assert res["unexpected"] == [], report
    sentinel = res["sentinel"]
    assert sentinel and sentinel["rounds"] > 0 and not sentinel["failures"], report
    assert res["final_checks_failed"] == 0 and res["child_errors"] == 0, report
    assert res["server_fds"]["after"] == res["server_fds"]["baseline"], report
    assert res["server_exit"] == 0, report
    # it did fuzz: every command, on every kind of fd, many times
    assert res["calls"] > 1000 * SECONDS, report
    for name in fuzz.CMD_NAMES.values():
        assert res["per_cmd"].get(name, 0) > 0, (name, report)
    for kind in ("control", "bus_owner", "endpoint", "conn", "ep_owner"):
        assert res["per_kind"].get(kind, 0) > 0, (kind, report)
    assert res["ok"], report


def test_the_fuzzer_sees_what_it_must(monkeypatch):
    """The checks can fail: an answer outside the sheet is reported."""
    monkeypatch.setattr(fuzz, "SHEET_ERRNOS", fuzz.SHEET_ERRNOS - {22})   # EINVAL
    res = fuzz.run(3, workers=1, child_seconds=2.0)
    assert not res["ok"]
    assert any(u[2] == "EINVAL" for u in res["unexpected"]), fuzz.summary(res)


def test_the_fuzzer_catches_a_hang():
    res = fuzz.run(3, workers=1, child_seconds=1.0, grace=2.0, inject="hang")
    assert not res["ok"] and res["hangs"] and res["unkillable"] == 0, fuzz.summary(res)


def test_the_fuzzer_catches_a_server_death():
    res = fuzz.run(4, workers=1, child_seconds=1.0, inject="kill_server")
    assert not res["ok"] and res["crashes"], fuzz.summary(res)
