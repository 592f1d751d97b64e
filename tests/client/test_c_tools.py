"""The C clients (c/kdbus-demo.c, c/kdbus-echo-bench.c), compiled with gcc into
a temporary directory, talking to Python peers across processes."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

NAME = "org.example.Echo"


def start_c_service(exe: str, bus_path: str, name: str = NAME) -> subprocess.Popen:
    proc = subprocess.Popen([exe, "-b", bus_path, "serve", name], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc


def wait_owner(conn, name: str, proc: subprocess.Popen, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owner = conn.name_owner(name)
        if owner is not None:
            return owner
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"C service exited ({proc.returncode}): {out} {err}")
        time.sleep(0.02)
    pytest.fail(f"{name} never appeared")


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def test_c_service_python_client(c_tools, bus, connect):
    client = connect()
    proc = start_c_service(c_tools["kdbus-demo"], bus.path)
    try:
        owner = wait_owner(client, NAME, proc)
        reply = client.call(NAME, b"hello", timeout=10)
        assert reply.payload == b"echo: hello" and reply.src_id == owner
        reply = client.call(owner, b"by id", timeout=10)
        assert reply.payload == b"echo: by id"
        assert client.call(NAME, b"quit", timeout=10).payload == b"echo: quit"
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert f"owns {NAME}" in out
    assert "'hello' from" in out


def test_c_client_c_service(c_tools, bus, connect):
    watcher = connect()
    exe = c_tools["kdbus-demo"]
    proc = start_c_service(exe, bus.path)
    try:
        wait_owner(watcher, NAME, proc)
        r = subprocess.run([exe, "-b", bus.path, "call", NAME, "hello from C"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "got reply 'echo: hello from C'" in r.stdout
        assert r.stdout.startswith("C client ")
        r = subprocess.run([exe, "-q", "-b", bus.path, "call", NAME, "quit"],
                           capture_output=True, text=True, timeout=30)
        assert r.stdout == "echo: quit\n"
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err


def test_c_client_python_service(c_tools, bus, connect):
    service = connect()
    service.acquire_name(NAME)
    errors = []

    def serve():
        try:
            msg = service.recv_wait(20)
            assert msg is not None
            service.reply(msg, b"py: " + msg.payload)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    r = subprocess.run([c_tools["kdbus-demo"], "-q", "-b", bus.path, "call", NAME, "hi"],
                       capture_output=True, text=True, timeout=30)
    t.join(10)
    assert not errors
    assert r.returncode == 0, r.stderr
    assert r.stdout == "py: hi\n"


def test_c_client_errors(c_tools, bus):
    r = subprocess.run([c_tools["kdbus-demo"], "-b", bus.path, "-t", "0.2", "call",
                        "org.example.Missing", "x"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "No such process" in r.stderr  # ESRCH
    r = subprocess.run([c_tools["kdbus-demo"], "call"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


@pytest.mark.parametrize("by_name", [False, True])
def test_echo_bench(c_tools, mount, by_name):
    args = [c_tools["kdbus-echo-bench"], "-c", mount.control, "-s", "8,4096", "-n", "20",
            "-r", "2", "-w", "2"] + (["-N"] if by_name else [])
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["payload"] for x in lines] == [8, 4096]
    for x in lines:
        assert x["bench"] == "echo-rtt" and x["n"] == 40 and x["reps"] == 2
        assert 0 < x["median_us"] <= x["p99_us"] <= x["max_us"]
        assert len(x["rep_median_us"]) == 2 and x["rate"] > 0


def test_echo_bench_on_existing_bus(c_tools, bus):
    r = subprocess.run([c_tools["kdbus-echo-bench"], "-b", bus.path, "-s", "1048576",
                        "-n", "3", "-r", "1", "-w", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    x = json.loads(r.stdout)
    assert x["payload"] == 1048576 and x["n"] == 3
