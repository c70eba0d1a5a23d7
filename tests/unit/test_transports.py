"""What the registry claims about transports, and the asyncio models' UDP back-pressure rule on a recording transport
(every transport on real server processes: tests/test_transports.py)."""

from __future__ import annotations

from servers import registry


def test_registry_claims_what_this_file_expects():
    """tests/test_transports.py parametrizes over the transports the registry claims; make sure that is not vacuous."""
    assert {"threads", "selectors", "asyncio-protocol", "uvloop-protocol", "go", "go-1proc"} <= {
        m.name for m in registry.MODELS.values() if "udp" in m.transports
    }
    assert all("unix" in m.transports for m in registry.MODELS.values() if m.name != "reuseport")
    assert registry.get("reuseport").transports == ("tcp",)


def test_asyncio_datagram_echo_drops_instead_of_queueing_while_the_send_buffer_is_full():
    """The asyncio models' UDP back-pressure rule, on a recording transport: while the loop says the send buffer is
    above its high-water mark (pause_writing), echoes are dropped and counted; after resume_writing they flow."""
    from servers.aio_protocol import EchoDatagram

    class Recorder:
        def __init__(self):
            self.sent = []

        def sendto(self, data, addr):
            self.sent.append((data, addr))

    transport, raw = Recorder(), Recorder()
    proto = EchoDatagram(raw)
    proto.connection_made(transport)
    peer = ("127.0.0.1", 9)
    proto.datagram_received(b"a", peer)
    proto.pause_writing()
    for _ in range(1000):
        proto.datagram_received(b"x" * 1000, peer)
    assert proto.dropped == 1000 and transport.sent == [(b"a", peer)]
    proto.resume_writing()
    proto.datagram_received(b"b", peer)
    proto.datagram_received(b"", peer)  # empty: answered on the raw socket (the transport would skip it)
    assert transport.sent == [(b"a", peer), (b"b", peer)] and raw.sent == [(b"", peer)]
