"""Message payloads derived from (connection, sequence): any lost, duplicated,
reordered or corrupted byte changes what comes back.

A message of ``size`` >= 16 bytes is a header (``conn`` u32, magic u32,
``seq`` u64, big-endian) and a body from a ring of pseudo-random bodies
shared by all connections of a run, chosen by ``seq``. The header makes
every message of a run unique; the shared ring keeps memory at
``ring x size`` (not per connection: 10,000 connections x 256 KiB bodies
would not fit) and building a message to one pack and one concatenation.
Below 16 bytes there is no room for a header: the message is a ring entry
chosen by connection and sequence together, so a misplaced message is
detected when it lands within the ring's length of another one (always, at
depth 1).
"""

from __future__ import annotations

import functools
import random
import struct

HEADER = struct.Struct("!IIQ")
HEADER_SIZE = HEADER.size
MAGIC = 0xEC40BE4C
RING_MAX = 256
RING_BYTES = 16 * 1024 * 1024  # cap on the shared ring's memory


@functools.lru_cache(maxsize=8)
def shared_ring(size: int, seed: int) -> tuple[bytes, ...]:
    """A power-of-two number of distinct bodies (the first byte is the index)."""
    body = size if size < HEADER_SIZE else size - HEADER_SIZE
    n = RING_MAX
    while n > 2 and n * max(body, 1) > RING_BYTES:
        n //= 2
    rng = random.Random(seed)
    if body == 0:
        return (b"",) * n
    return tuple(bytes([i & 0xFF]) + rng.randbytes(body - 1) for i in range(n))


class MessageMaker:
    """Builds and classifies the messages of one connection."""

    __slots__ = ("conn_id", "size", "ring", "mask", "tiny", "_pack")

    def __init__(self, conn_id: int, size: int, run_seed: int = 0) -> None:
        if size < 1:
            raise ValueError("message size must be at least 1 byte")
        self.conn_id = conn_id
        self.size = size
        self.tiny = size < HEADER_SIZE
        self.ring = shared_ring(size, run_seed)
        self.mask = len(self.ring) - 1
        self._pack = HEADER.pack

    def message(self, seq: int) -> bytes:
        if self.tiny:
            return self.ring[(seq + self.conn_id * 131) & self.mask]
        return self._pack(self.conn_id, MAGIC, seq) + self.ring[seq & self.mask]

    def classify(self, got: bytes, seq: int) -> str:
        """Why ``got`` is not message ``seq``: 'sequence' (lost, duplicated or reordered) or 'corrupt'."""
        if not self.tiny and len(got) >= HEADER_SIZE:
            conn, magic, gseq = HEADER.unpack_from(got)
            if magic == MAGIC and conn == self.conn_id and gseq != seq and got == self.message(gseq):
                return "sequence"
        elif self.tiny and got in self.ring and got != self.message(seq):
            return "sequence"
        return "corrupt"
