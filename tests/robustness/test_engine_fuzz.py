"""Random programs of commands on the engine (issue 7, part 1): see enginefuzz.py.

The ABI layer is fuzzed by tests/abi/test_properties.py (random and
structured command bytes); here every command also goes through the
parser, then the engine, in random order and with random arguments, and
the engine's books must balance after every step.
"""

import os

from hypothesis import HealthCheck, given, settings, strategies as st

from .enginefuzz import World

EXAMPLES = int(os.environ.get("KDBUSFS_ENGINE_FUZZ_EXAMPLES", 200))


@settings(deadline=None, max_examples=EXAMPLES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_random_programs_keep_the_books(data):
    w = World(data)
    for _ in range(data.draw(st.integers(1, 80), label="steps")):
        w.step()
        w.check()
    w.finish()


# -- found by the test above: a tracker ended without a reply leaked the
#    requester's pending-request slot (kdbusfs/core/bus.py end_tracker) -----

def _requester_and_peer():
    from kdbusfs.abi import constants as K
    from kdbusfs.core.domain import Domain
    from kdbusfs.core.identity import simple_identity
    d = Domain(clock=lambda: 10**12, realtime=lambda: 42, random_bytes=lambda n: bytes(n))
    who = simple_identity(1000)
    bus = d.bus_make(who, flags=K.KDBUS_MAKE_ACCESS_WORLD, name="1000-t", bloom_size=8,
                     n_hash=1)
    return d, bus, who


def _request(d, a, b, cookie):
    from kdbusfs.abi import constants as K
    from kdbusfs.core.message import Outgoing
    d.send(a, Outgoing(flags=K.KDBUS_MSG_EXPECT_REPLY, priority=0, dst_id=b.id, src_id=0,
                       payload_type=K.KDBUS_PAYLOAD_DBUS, cookie=cookie,
                       timeout_or_reply=10**13, parts=[]))


def test_dropped_requests_give_their_slot_back():
    """ABI §1.4: 128 *outstanding* requests; a request the receiver DROPs is
    not outstanding any more (it gets REPLY_DEAD), so 200 in a row work."""
    from kdbusfs.abi import constants as K
    d, bus, who = _requester_and_peer()
    a = d.hello(bus.default, who, flags=0, pool_size=1 << 20)
    b = d.hello(bus.default, who, flags=0, pool_size=1 << 20)
    for i in range(200):
        _request(d, a, b, i + 1)
        d.recv(b, flags=K.KDBUS_RECV_DROP)
        assert a.n_requests == 0
        while not d.recv(a, flags=K.KDBUS_RECV_DROP).error:   # its REPLY_DEAD
            pass


def test_requests_to_dead_peers_give_their_slot_back():
    d, bus, who = _requester_and_peer()
    a = d.hello(bus.default, who, flags=0, pool_size=1 << 20)
    for i in range(200):
        b = d.hello(bus.default, who, flags=0, pool_size=1 << 20)
        _request(d, a, b, i + 1)
        d.disconnect(b)
        d.close_pool(b)
        assert a.n_requests == 0
