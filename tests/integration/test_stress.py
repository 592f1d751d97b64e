"""A bounded broadcast stress test on a real mount (fact sheet §6.10, §6.15).

N sender processes broadcast M signals each while K matching receiver
processes and a few non-matching ones listen.  Every signal must reach every
matching receiver exactly once, in per-sender order, nothing may reach the
others, and nothing may be lost.

Each sender runs as its own uid: the per-receiver quota is per sending user
(256 queued messages, §1.4/§6.7), so with M <= 256 no receiver can lose a
message however far behind it falls, and a loss is a bug, not a race.
"""

from __future__ import annotations

import os
import time

from kdbusfs.client import make_bus

from .peers import Peer

N_SENDERS = int(os.environ.get("KDBUSFS_STRESS_SENDERS", 4))
N_MESSAGES = int(os.environ.get("KDBUSFS_STRESS_MESSAGES", 200))
N_MATCHING = int(os.environ.get("KDBUSFS_STRESS_RECEIVERS", 4))
TIME_LIMIT = 30.0
assert N_MESSAGES <= 256, "more would exceed one sending user's quota at a slow receiver"

SENDER = """
conn = Connection.open(sys.argv[1])
idx, count = int(sys.argv[2]), int(sys.argv[3])
bloom = conn.bloom("interface:org.example.Stress", "member:Tick")
say("ready", conn.id)
ask()                                        # "go"
t0 = time.monotonic()
for seq in range(count):
    conn.emit(b"%d:%d" % (idx, seq), bloom=bloom)
say("sent", count, round(time.monotonic() - t0, 3))
ask()
"""

RECEIVER = """
conn = Connection.open(sys.argv[1])
mode, expected = sys.argv[2], int(sys.argv[3])
if mode == "match":
    conn.add_match(bloom_mask=conn.bloom("member:Tick"))
elif mode == "other-key":                    # a mask the signals do not fill
    conn.add_match(bloom_mask=conn.bloom("member:Tick", "member:Tock"))
elif mode == "other-sender":                 # an id no sender has
    conn.add_match(sender=(1 << 62) + 1)
say("ready", conn.id)
stats = dict(count=0, per_sender={}, src={}, order_errors=0, notifications=0)
nxt = {}

def take(m):
    if m.notification is not None:
        stats["notifications"] += 1
        return
    idx, seq = (int(x) for x in m.payload.split(b":"))
    if seq != nxt.get(idx, 0):
        stats["order_errors"] += 1       # a gap, a duplicate or a reordering
    nxt[idx] = seq + 1
    stats["count"] += 1
    stats["per_sender"][idx] = stats["per_sender"].get(idx, 0) + 1
    stats["src"].setdefault(idx, m.src_id)
    if stats["src"][idx] != m.src_id:
        stats["order_errors"] += 1

deadline = time.monotonic() + 60
while mode == "match" and stats["count"] < expected and time.monotonic() < deadline:
    m = conn.recv()
    if m is None:
        conn.wait(1)
        continue
    take(m)
if mode == "match":
    send_json("done", dict(stats, t=time.monotonic()))
ask()                                        # "stop": everything has been sent
while (m := conn.recv()) is not None:        # anything extra, or for the others
    take(m)
stats["dropped"] = conn.dropped
send_json("final", stats)
"""


def test_broadcast_stress(mount):
    total = N_SENDERS * N_MESSAGES
    peers: list[Peer] = []
    with make_bus(mount.path, "stress", access="world") as bus:
        try:
            matching = [Peer(RECEIVER, bus.path, "match", total) for _ in range(N_MATCHING)]
            others = [Peer(RECEIVER, bus.path, mode, total)
                      for mode in ("other-key", "other-sender", "none")]
            peers += matching + others
            for r in matching + others:
                r.expect("ready")
            senders = [Peer(SENDER, bus.path, i, N_MESSAGES, uid=1001 + i)
                       for i in range(N_SENDERS)]
            peers += senders
            sender_ids = {i: int(s.expect("ready")[0]) for i, s in enumerate(senders)}

            t0 = time.monotonic()
            for s in senders:
                s.tell("go")
            done = [r.json("done", timeout=TIME_LIMIT + 30) for r in matching]
            elapsed = max(d["t"] for d in done) - t0
            send_times = [float(s.expect("sent")[1]) for s in senders]
            for r in matching + others:
                r.tell("stop")
            final = [r.json("final") for r in matching]
            quiet = [r.json("final") for r in others]
        finally:
            for p in peers:
                p.kill()

    per_sender = {str(i): N_MESSAGES for i in range(N_SENDERS)}
    src = {str(i): sender_ids[i] for i in range(N_SENDERS)}
    for f in final:
        assert f["count"] == total, f            # nothing lost, nothing extra
        assert f["per_sender"] == per_sender
        assert f["src"] == src
        assert f["order_errors"] == 0            # per-sender order, no duplicates
        assert f["dropped"] == 0 and f["notifications"] == 0
    for q in quiet:
        assert q["count"] == 0 and q["notifications"] == 0 and q["dropped"] == 0, q
    deliveries = total * N_MATCHING
    print(f"\nstress: {N_SENDERS} senders x {N_MESSAGES} broadcasts = {total} messages, "
          f"{N_MATCHING} matching + {len(quiet)} other receivers, {deliveries} deliveries "
          f"in {elapsed:.2f} s ({deliveries / elapsed:.0f}/s; slowest sender "
          f"{max(send_times):.2f} s), lost=0")
    assert elapsed < TIME_LIMIT
