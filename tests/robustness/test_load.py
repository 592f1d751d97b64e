"""The load generator (kdbusfs/tools/load.py, scripts/load), a short run,
and the accounting it relies on, checked on made-up books."""

import errno
import os
import pickle

import pytest

from kdbusfs.tools import load

pytestmark = pytest.mark.timeout(150, method="thread")

SECONDS = float(os.environ.get("KDBUSFS_LOAD_SECONDS", 8))


def test_thousand_connections_account_for_every_message():
    res = load.run(SECONDS, conns=1000, procs=8, slow=5)
    report = load.summary(res)
    print(report)
    assert res["problems"] == [], report
    assert res["lost"] == 0 and res["duplicates"] == 0 and res["misdelivered"] == 0, report
    assert res["drops_over_counted"] == 0, report
    assert res["refused_bad_errnos"] == [], report
    assert res["delivered"] > 1000 and all(res["accepted_by_kind"].values()), report
    # the slow readers' quotas filled: refusals and counted drops happened
    assert res["refused"].get("ENOBUFS", 0) > 0 or res["dropped_counted"] > 0, report
    kib = res["server_kib"]
    assert kib["traffic_growth"] <= kib["quota_bound"], report
    assert res["server_fds_after"] == res["server_fds_baseline"], report
    assert res["ok"], report


TABLE = [(0, 10, None, 0), (1, 11, "org.x.N1", 1), (2, 12, None, 0)]


def _books(tmp_path, sent, received, dropped):
    with open(tmp_path / "w0.pickle", "wb") as f:
        pickle.dump({"sent": sent, "received": received, "dropped": dropped}, f)
    return load.account(str(tmp_path), TABLE, groups=2)


def test_accounting_balances(tmp_path):
    sent = [(0, 1, load.UNICAST, 1, 0), (0, 2, load.BROADCAST, 0, 0),
            (1, 1, load.BY_NAME, 1, 0), (2, 1, load.UNICAST, 0, errno.ENOBUFS)]
    received = [(1, 0, 1, 0, 1), (0, 0, 2, 2, 0), (1, 1, 1, 1, 1)]
    r = _books(tmp_path, sent, received, {0: 0, 1: 0, 2: 1})   # 2 lost the broadcast
    assert (r["lost"], r["duplicates"], r["misdelivered"], r["drops_over_counted"]) == \
        (0, 0, 0, 0)
    assert r["refused"] == {"ENOBUFS": 1} and r["copies_expected"] == 4


def test_accounting_catches_loss_duplicates_and_strays(tmp_path):
    sent = [(0, 1, load.UNICAST, 1, 0), (0, 2, load.BROADCAST, 0, 0),
            (2, 1, load.UNICAST, 0, errno.ENOBUFS)]
    # unicast 0/1 never arrives; the broadcast reaches 0 twice and 2 not at
    # all, with no drop counted; the refused message arrives anyway
    received = [(0, 0, 2, 2, 0), (0, 0, 2, 2, 0), (0, 2, 1, 0, 0)]
    r = _books(tmp_path, sent, received, {})
    assert r["lost"] == 2 and r["duplicates"] == 1 and r["misdelivered"] == 1


def test_accounting_catches_drops_counted_twice(tmp_path):
    sent = [(0, 1, load.BROADCAST, 0, 0)]
    received = [(0, 0, 1, 2, 0), (2, 0, 1, 2, 0)]
    r = _books(tmp_path, sent, received, {2: 1})
    assert r["lost"] == 0 and r["drops_over_counted"] == 1
