"""Message payloads derived from (connection, sequence): any lost, duplicated,
reordered or corrupted byte changes what comes back.

A message of ``size`` >= 16 bytes is a header (``conn`` u32, magic u32,
``seq`` u64, big-endian) and a body taken from a per-connection ring of 256
pseudo-random bodies, chosen by ``seq``. The header makes every message of a
run unique; the ring keeps building a message to one 16-byte pack and one
concatenation. Below 16 bytes there is no room for a header: the message is
the start of the ring body, so a misplaced message is detected when it lands
within 256 messages of another one (always, at depth 1).
"""

from __future__ import annotations

import random
import struct

HEADER = struct.Struct("!IIQ")
HEADER_SIZE = HEADER.size
MAGIC = 0xEC40BE4C
RING = 256


class MessageMaker:
    """Builds and classifies the messages of one connection."""

    __slots__ = ("conn_id", "size", "ring", "_pack", "_tiny")

    def __init__(self, conn_id: int, size: int, run_seed: int = 0) -> None:
        if size < 1:
            raise ValueError("message size must be at least 1 byte")
        self.conn_id = conn_id
        self.size = size
        self._tiny = size < HEADER_SIZE
        body = size if self._tiny else size - HEADER_SIZE
        rng = random.Random((run_seed << 32) ^ conn_id)
        # ring bodies: random bytes, with the index stamped in so no two are equal
        self.ring = [bytes([i]) + rng.randbytes(body - 1) if body else b"" for i in range(RING)]
        if self._tiny:
            self.ring = [bytes([(i + conn_id) & 0xFF]) + b[1:] for i, b in enumerate(self.ring)]
        self._pack = HEADER.pack

    def message(self, seq: int) -> bytes:
        if self._tiny:
            return self.ring[seq & 0xFF]
        return self._pack(self.conn_id, MAGIC, seq) + self.ring[seq & 0xFF]

    def classify(self, got: bytes, seq: int) -> str:
        """Why ``got`` is not message ``seq``: 'sequence' (lost, duplicated or reordered) or 'corrupt'."""
        if not self._tiny and len(got) >= HEADER_SIZE:
            conn, magic, gseq = HEADER.unpack_from(got)
            if magic == MAGIC and conn == self.conn_id and gseq != seq and got == self.message(gseq):
                return "sequence"
        elif self._tiny and got in self.ring and got != self.message(seq):
            return "sequence"
        return "corrupt"
