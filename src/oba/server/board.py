"""Open LDAP connections of every process of one node, for ``server.maxConnections``.

Rules for this module: the writer process creates the board (a ``memfd`` of one 64-bit slot
per process) before it starts its listener workers and hands them the descriptor; each process
writes only its own slot (its open connection count, at every change) and reads the sum when it
decides whether to accept a connection. A slot write is one aligned 8-byte store, so a reader
sees either the old or the new count of another process, never a torn value; the sum may lag a
concurrent accept by one connection, as any limit checked without a lock does. The writer zeroes
the slot of a worker that died.
"""

from __future__ import annotations

import mmap
import os
import struct


class ConnectionBoard:
    def __init__(self, fd: int, slots: int, slot: int) -> None:
        self.fd = fd
        self.slots = slots
        self.slot = slot
        self._mm = mmap.mmap(fd, 8 * slots)
        self._all = struct.Struct(f"={slots}q")

    @classmethod
    def create(cls, slots: int) -> ConnectionBoard:
        """A new board for ``slots`` processes; this process is slot 0 (the writer). The
        descriptor is inheritable: pass it to the workers (``pass_fds``)."""
        fd = os.memfd_create("oba-connections", 0)
        os.ftruncate(fd, 8 * slots)
        return cls(fd, slots, 0)

    def publish(self, count: int) -> None:
        struct.pack_into("=q", self._mm, 8 * self.slot, count)

    def clear(self, slot: int) -> None:
        struct.pack_into("=q", self._mm, 8 * slot, 0)

    def counts(self) -> tuple[int, ...]:
        return tuple(self._all.unpack_from(self._mm, 0))

    def total(self) -> int:
        return sum(self._all.unpack_from(self._mm, 0))

    def close(self) -> None:
        self._mm.close()
        os.close(self.fd)
