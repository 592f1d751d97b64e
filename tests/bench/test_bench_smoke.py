"""Smoke test of the benchmark harness (scripts/bench -> bench/run.sh): the quick mode of
the kdbusfs cases only, with tiny iteration counts.  No D-Bus broker is needed: the broker
columns of the report stay empty.  It checks that every case produced a result line that
parses, that no broadcast was lost, and that everything the run started is gone."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "bench", "run.sh")

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse"),
    pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None,
                       reason="gcc and make build the C clients"),
    pytest.mark.skipif(os.geteuid() != 0 and shutil.which("fusermount3") is None,
                       reason="mounting needs root or fusermount3"),
]

EXPECTED = ({"memory", "echo-c-8-poll"}
            | {"echo-%s-%d" % (lang, s) for lang in ("c", "py") for s in (8, 1024, 65536, 1048576)}
            | {"signal-%s-%d" % (lang, s) for lang in ("c", "py") for s in (64, 65536)}
            | {"scale-conns-1", "scale-conns-1000", "scale-names-10", "scale-names-10000",
               "scale-matches-10", "scale-matches-10000"})


@pytest.mark.timeout(90)
def test_bench_quick_kdbusfs_only(tmp_path):
    env = dict(os.environ, BUSES="kdbusfs", SCALE="0.01", REPS="1", CASE_TIMEOUT="40",
               SCALING_CONNS="1 1000", RESULTS_DIR=str(tmp_path), PYTHON=sys.executable)
    proc = subprocess.run([RUN], cwd=ROOT, env=env, capture_output=True, text=True, timeout=85)
    assert proc.returncode == 0, proc.stderr[-4000:]

    raws = glob.glob(str(tmp_path / "bench-*.jsonl"))
    reports = glob.glob(str(tmp_path / "bench-*.md"))
    assert len(raws) == 1 and len(reports) == 1, os.listdir(tmp_path)
    results = []
    with open(raws[0]) as f:
        for line in f:
            if line.strip():
                results.append(json.loads(line))        # every line is JSON
    failed = [r for r in results if "failed" in r]
    assert not failed, failed
    assert all(r["bus_kind"] == "kdbusfs" for r in results)
    cases = {r["case"] for r in results if r.get("bench") != "load-setup"}
    assert cases == EXPECTED, cases ^ EXPECTED

    for r in results:
        if r["bench"] in ("echo-rtt", "signal-tput"):
            assert r["n"] > 0 and r["median_us"] > 0 and r["p99_us"] >= r["median_us"], r
        if r["bench"] == "signal-tput":
            assert r["lost"] == 0 and r["sent"] > 0, r
        if r["bench"] == "rss-idle":
            assert r["conns"] == 1000 and r["rss_after_kib"] > 0, r

    with open(reports[0]) as f:
        report = f.read()
    assert "| Case | kdbusfs median | kdbusfs p99 | dbus-broker median" in report
    assert "Latency growth, 1 → 1,000 other connections" in report
    assert "| Case | kdbusfs median" in proc.stdout          # the table on stdout too

    # everything it started is stopped: the server exited and its mount is gone
    mnt = re.search(r"starting private kdbusfs on (\S+)", proc.stderr).group(1)
    pid = int(re.search(r"kdbusfs pid (\d+)", proc.stderr).group(1))
    with open("/proc/mounts") as f:
        assert mnt not in f.read()
    assert not os.path.exists(mnt)
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            assert mnt.encode() not in f.read()         # the pid was reused, not ours
    except FileNotFoundError:
        pass
    logs = glob.glob(str(tmp_path / "logs-*" / "kdbusfs.log"))
    assert logs
    with open(logs[0]) as f:
        assert "Traceback" not in f.read()
