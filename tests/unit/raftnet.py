"""A deterministic simulation of the Raft RUNTIME: real ``RaftNode``s over an in-memory network.

``raftsim`` drives the pure ``RaftCore``; this one runs N real ``RaftNode`` objects, with their
real ``Transport``, ``RaftLog`` (LMDB) and ``SnapshotStore`` on disk, so that the runtime's own
logic (redials, watchdogs, drain, snapshot streaming and install, what is persisted before it
is sent or applied) runs under faults too.

Rules for this module:
- ONE asyncio loop with VIRTUAL time (``VirtualLoop``): its selector never blocks, it advances
  the clock to the next timer instead, so ``asyncio.sleep``, ``wait_for`` and the node's ticker
  run in simulated seconds (a minute of cluster life costs seconds of CPU). No threads: every
  blocking call (log fsync, snapshot copy, the snapshot receiver's fsync) goes through
  ``NodeConfig.run_blocking``, which waits a seeded virtual delay and then runs it inline.
  Every timer lies at least ``VirtualLoop.MIN_DELAY`` ahead (asyncio fires timers within its
  clock resolution at once: with a clock that only moves on timers that would spin).
- Everything random comes from ONE seeded ``random.Random`` (node cores get their own
  ``Random`` seeded from it): the same seed gives the same run (``Result.trace``, a hash of the
  events, is compared by the determinism test).
- The network (``SimNetwork``) hands each transport real ``asyncio.StreamReader``/
  ``StreamWriter`` objects over fake ``asyncio.Transport``s (``_End``). A connection belongs to
  the LINK (dialer, target) and has one pipe per direction, each in order with a seeded latency
  per chunk. Faults per link: hold (nothing moves either way on that link's connections, bytes
  and closes are kept; a writer whose kept bytes pass the high-water mark is paused, so its
  ``drain()`` blocks like a full TCP send buffer), reset (both ends see ConnectionResetError),
  drop (both ends see EOF; later writes are answered by a reset), blackhole (one connection
  silently lost for ever: a NAT or a proxy forgot it), latency spikes, and a MIDDLEBOX (a TCP
  proxy: ``open_connection`` succeeds at once even when the target is down or the link is
  held; the box then connects onward: target down -> per ``Link.box_mode`` it resets the
  client, closes it, keeps it and retries, or keeps it and never connects it ("sink"); held ->
  it waits; target dies -> the client sees EOF). Without a middlebox dialing a dead node is
  refused and dialing over a held link waits for the SYN retransmissions until the connect
  timeout. ``abort()`` is asyncio's: its buffer is lost, the kernel still sends what it took
  (then FIN; RST when it holds unread data); a dead process's sockets are closed the same way
  or reset.
- A crash cancels every task of the node without ``stop()`` (no final write), kills its
  connections (the other ends see FIN or RST, kept while the link is held) and closes its LMDB
  environment; a restart builds a new ``RaftNode`` (and state machine) over the same
  directories. Crashes come from the nemesis (any await point) and from CRASH POINTS: right
  after a blocking call returned (a log fsync whose messages are not sent yet, a snapshot
  adopted, a compaction), after the state machine created or installed a snapshot; the task
  then stops at that instant (``Cluster.crash_point``; ``Cluster.forced_crashes`` pins one
  for a scenario). The state machine (``SimSM``) may lose its unsynced applies on a crash
  (the real store's applied index may be behind its log): they must be re-applied from the
  log.
- Clients propose unique payloads on the leader (``RaftNode.propose``) or through a follower
  (a transport request ``{"op": "fwd"}`` the leader serves), read through ``read_barrier``
  and move leadership (``transfer_leadership``). Scenario tests drive the same ``Cluster``
  by hand (``hold``/``blackhole``/``crash``/``restart``..., ``SimNetwork.frame_hook`` to act
  on a given frame).
- Checks (``Violation`` names the seed): election safety (one leader per term, and every node
  that follows a leader in a term follows the same one); state machine safety (the same
  (term, payload) at every index everywhere); each state machine applies in order without
  gaps; persist-before-apply (an entry handed to the state machine is in the node's durable
  log or covered by its durable snapshot); persist-before-send (an APP_RESP accepting index i
  or a granted VOTE_RESP is written to the network only once the sender's durable log / hard
  state covers it); no Raft loop dies (``node.failed``); a read through ``read_barrier`` sees
  every write acknowledged before it began; after the final heal, within a bound: one
  leader, the same commit and applied index everywhere, every transport connected to every
  peer; every acknowledged payload is applied on every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import random
import selectors
import struct
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVarTuple, cast

import msgpack

from oba.raft.node import NodeConfig, NotLeader, ProposalDropped, RaftNode
from oba.raft.transport import Frame, FrameError, NotSent, decode_body, split_addr
from oba.raft.types import Entry, MsgType, SnapshotMeta, from_wire

ConnectionCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
_LEN = struct.Struct(">I")
_Ts = TypeVarTuple("_Ts")


class Violation(AssertionError):
    pass


class Deadlock(RuntimeError):
    """The loop has nothing scheduled: every task waits for something that never comes."""


# ---------------------------------------------------------------------------------------------
# virtual time


class _Clock:
    def __init__(self, start: float) -> None:
        self.now = start


class _VirtualSelector(selectors.BaseSelector):
    """Polls the real selector (only asyncio's self-pipe is registered) without blocking and
    advances the virtual clock by the timeout the loop would have slept."""

    def __init__(self, clock: _Clock) -> None:
        self._real = selectors.DefaultSelector()
        self._clock = clock

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None
               ) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready:
            return ready
        if timeout is None:
            raise Deadlock("nothing is scheduled: the simulation would wait forever")
        if timeout > 0:
            self._clock.now += timeout
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Any:
        return self._real.get_map()


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual and never sleeps for real."""

    MIN_DELAY = 1e-6

    def __init__(self, start: float = 1000.0) -> None:
        self.clock = _Clock(start)
        super().__init__(selector=_VirtualSelector(self.clock))

    def time(self) -> float:
        return self.clock.now

    def call_at(self, when: float, callback: Callable[[*_Ts], object],
                *args: *_Ts, context: contextvars.Context | None = None
                ) -> asyncio.TimerHandle:
        # asyncio runs a timer due within its clock resolution (1 ns) at once; real time
        # moves meanwhile, virtual time would not: a loop such as "wait for what is left
        # of a deadline" (9e-13 s left) would spin at one instant for ever. So every timer
        # lies at least a microsecond ahead.
        when = max(when, self.clock.now + self.MIN_DELAY)
        return super().call_at(when, callback, *args, context=context)


# ---------------------------------------------------------------------------------------------
# the network


@dataclass
class Link:
    """Connections dialed by ``src`` to ``dst``."""

    src: int
    dst: int
    holds: int = 0  # > 0: blackholed (nothing moves either way, all is kept)
    middlebox: bool = False
    # what the box does to a client when the target is down: "reset", "eof" (closes it),
    # "hang" (keeps it and retries its backend), "sink" (keeps it, never connects it onward)
    box_mode: str = "reset"
    lat_lo: float = 0.0002
    lat_hi: float = 0.002
    spike_until: float = 0.0
    spike: float = 0.0

    @property
    def held(self) -> bool:
        return self.holds > 0


class _Conn:
    __slots__ = ("blackholed", "box", "broken", "client", "id", "link", "net", "server")

    def __init__(self, net: SimNetwork, cid: int, link: Link, box: bool) -> None:
        self.net = net
        self.id = cid
        self.link = link
        self.box = box
        self.broken = False  # dropped by the network: writes are answered by a reset
        self.blackholed = False  # silently lost forever (a NAT or proxy forgot it)
        self.client: _End | None = None
        self.server: _End | None = None

    def other(self, end: _End) -> _End | None:
        return self.server if end is self.client else self.client

    def can_flow(self) -> bool:
        if self.link.held or self.blackholed:
            return False
        return self.broken or (self.server is not None and self.client is not None)


class _End(asyncio.Transport):
    """One end of a simulated TCP connection (a fake ``asyncio.Transport``)."""

    def __init__(self, conn: _Conn, owner: int, peername: tuple[str, int]) -> None:
        super().__init__()
        self.conn = conn
        self.net = conn.net
        self.owner = owner
        self.peername = peername
        self.protocol: asyncio.StreamReaderProtocol | None = None
        self.pipe: deque[tuple[float, str, bytes]] = deque()  # toward the other end
        self.pipe_bytes = 0
        self.last_at = 0.0
        self.closing = False  # closed or aborted locally, reset, or its process died
        self.dead = False  # its process died: never notify its protocol again
        self.rst_sent = False
        self.lost_called = False
        self.reading_paused = False
        self.write_paused = False
        self.peer_eof = False
        self.timer: asyncio.TimerHandle | None = None
        self.parse = bytearray()
        self.write_limit = self.net.hwm

    # ---------------------------------------------------------------- asyncio.Transport API
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peername
        if name == "sockname":
            return ("sim", 0)
        return default

    def is_closing(self) -> bool:
        return self.closing

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = cast(asyncio.StreamReaderProtocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def is_reading(self) -> bool:
        return not self.reading_paused

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            other = self.conn.other(self)
            if other is not None:
                other.kick()

    def get_write_buffer_size(self) -> int:
        return self.pipe_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.write_limit // 4, self.write_limit

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is not None:
            self.write_limit = high

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or not data:
            return
        chunk = bytes(data)
        self.net.on_write(self, chunk)
        self._enqueue("data", chunk)
        if self.pipe_bytes > self.write_limit and not self.write_paused:
            self.write_paused = True
            self.net.stats["pause_writing"] += 1
            assert self.protocol is not None
            self.protocol.pause_writing()

    def write_eof(self) -> None:
        if not self.closing:
            self._enqueue("eof", b"")

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self._enqueue("eof", b"")  # after the data still in flight (the kernel flushes it)
        self._notify_lost(None)

    def abort(self) -> None:
        """asyncio's abort: its own buffer is lost, the socket is closed; the kernel sends what
        it had taken, then FIN (RST when it holds received data nobody read)."""
        if self.closing:
            return
        self.closing = True
        self._close_socket()
        self._notify_lost(None)

    def _close_socket(self) -> None:
        other = self.conn.other(self)
        if self.reading_paused and other is not None and other.pipe:
            self._send_rst()
            return
        kept = 0
        for k, (_, _, data) in enumerate(self.pipe):  # the kernel's send buffer
            if kept + len(data) > self.write_limit // 2:
                for _ in range(len(self.pipe) - k):
                    self.pipe.pop()  # asyncio's buffer, above it, dies with the transport
                break
            kept += len(data)
        self.pipe_bytes = kept
        self._enqueue("eof", b"")

    # ---------------------------------------------------------------- the pipe
    def _enqueue(self, kind: str, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        at = max(loop.time() + self.net.latency(self.conn.link), self.last_at)
        self.last_at = at
        self.pipe.append((at, kind, data))
        self.pipe_bytes += len(data)
        self.kick()

    def _send_rst(self) -> None:
        """Discard what was not sent and reset the other end (once)."""
        if self.rst_sent:
            return
        self.rst_sent = True
        self.pipe.clear()
        self.pipe_bytes = 0
        self._enqueue("rst", b"")

    def kick(self) -> None:
        """(Re)schedule delivery of the head of the pipe."""
        if not self.pipe or not self.conn.can_flow():
            return
        loop = asyncio.get_running_loop()
        at = self.pipe[0][0]
        if self.timer is not None:
            if self.timer.when() <= max(at, loop.time()):
                return
            self.timer.cancel()
        self.timer = loop.call_at(max(at, loop.time()), self._pump)

    def _pump(self) -> None:
        self.timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        conn = self.conn
        while self.pipe and conn.can_flow():
            at, kind, data = self.pipe[0]
            if at > now:
                self.timer = loop.call_at(at, self._pump)
                break
            if conn.broken:  # dropped by the network: data is answered with a reset
                self.pipe.popleft()
                self.pipe_bytes -= len(data)
                if kind == "data":
                    self._receive("rst")
                continue
            other = conn.other(self)
            assert other is not None
            if kind == "data" and other.reading_paused and not other.closing:
                break  # other.resume_reading() kicks us again
            self.pipe.popleft()
            self.pipe_bytes -= len(data)
            other._receive(kind, data)
        self._maybe_resume_writing()

    def _maybe_resume_writing(self) -> None:
        if self.write_paused and self.pipe_bytes <= self.write_limit // 4 and not self.closing:
            self.write_paused = False
            assert self.protocol is not None
            self.protocol.resume_writing()

    def _receive(self, kind: str, data: bytes = b"") -> None:
        if kind == "data":
            if self.closing:
                self._send_rst()  # data for a closed socket: the kernel answers with a reset
                return
            assert self.protocol is not None
            self.net.stats["chunks"] += 1
            self.protocol.data_received(data)
        elif kind == "eof":
            if self.closing or self.peer_eof:
                return
            self.peer_eof = True
            assert self.protocol is not None
            if not self.protocol.eof_received():
                self.close()
        elif kind == "rst":
            self.lose(ConnectionResetError("connection reset by peer"))

    def lose(self, exc: Exception) -> None:
        """Reset: nothing more goes out, the protocol sees ``exc``."""
        self.closing = True
        self.rst_sent = True
        self.pipe.clear()
        self.pipe_bytes = 0
        self._notify_lost(exc)

    def _notify_lost(self, exc: Exception | None) -> None:
        if self.lost_called:
            return
        self.lost_called = True
        if self.dead or self.protocol is None:
            return
        proto = self.protocol
        asyncio.get_running_loop().call_soon(proto.connection_lost, exc)

    def kill(self, fin: bool) -> None:
        """The owner's process died: the kernel closes the socket (FIN after the data in
        flight, or RST); nothing reaches the dead process any more."""
        self.dead = True
        if self.closing:
            return
        self.closing = True
        self.lost_called = True
        if fin:
            self._close_socket()
        else:
            self._send_rst()


class _Server:
    def __init__(self, net: SimNetwork, node: int, cb: ConnectionCallback) -> None:
        self.net = net
        self.node = node
        self.cb = cb

    def close(self) -> None:
        if self.net.listeners.get(self.node) is self:
            del self.net.listeners[self.node]

    async def wait_closed(self) -> None:
        return None


class NodeNet:
    """The ``Network`` of one node (it knows who dials)."""

    def __init__(self, net: SimNetwork, node: int) -> None:
        self.net = net
        self.node = node
        self.tasks: dict[asyncio.Task[None], None] = {}  # accepted connections' handlers

    async def open_connection(self, host: str, port: int, ssl_ctx: Any, timeout: float
                              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(self.net.dial(self.node, host, port), timeout)

    async def start_server(self, cb: ConnectionCallback, host: str, port: int,
                           ssl_ctx: Any = None, timeout: float = 0.0) -> tuple[_Server, int]:
        return self.net.listen(self, cb, host, port), port


class SimNetwork:
    def __init__(self, rng: random.Random, hwm: int, on_frame: Callable[[int, Frame], None],
                 trace: Callable[..., None]) -> None:
        self.rng = rng
        self.hwm = hwm
        self.on_frame = on_frame
        self.trace = trace
        self.addrs: dict[tuple[str, int], int] = {}
        self.links: dict[tuple[int, int], Link] = {}
        self.listeners: dict[int, _Server] = {}
        self.nets: dict[int, NodeNet] = {}
        self.conns: dict[int, _Conn] = {}
        self.frame_hook: Callable[[_Conn, int, Frame], None] | None = None  # for scenarios
        self.ids = 0
        self.stats: Counter[str] = Counter()

    def add_node(self, node: int, addr: str) -> None:
        self.addrs[split_addr(addr)] = node
        for other in list(self.nets):
            self.links[(node, other)] = Link(node, other)
            self.links[(other, node)] = Link(other, node)
        self.nets[node] = NodeNet(self, node)

    def link(self, src: int, dst: int) -> Link:
        return self.links[(src, dst)]

    def latency(self, link: Link) -> float:
        lat = link.lat_lo + self.rng.random() * (link.lat_hi - link.lat_lo)
        if link.spike_until > asyncio.get_running_loop().time():
            lat += self.rng.random() * link.spike
        return lat

    # ---------------------------------------------------------------- wiring
    def listen(self, nn: NodeNet, cb: ConnectionCallback, host: str, port: int) -> _Server:
        if self.addrs.get((host, port)) != nn.node:
            raise OSError(f"cannot listen on {host}:{port}")
        if nn.node in self.listeners:
            raise OSError(f"address {host}:{port} already in use")
        server = self.listeners[nn.node] = _Server(self, nn.node, cb)
        # a node that is back: middleboxes that keep retrying connect now
        for conn in list(self.conns.values()):
            if conn.box and conn.server is None and conn.link.dst == nn.node \
                    and not conn.blackholed:
                self._box_try(conn)
        return server

    async def dial(self, src: int, host: str, port: int
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        dst = self.addrs.get((host, port))
        if dst is None:
            raise OSError(f"no route to {host}:{port}")
        link = self.link(src, dst)
        self.stats["dials"] += 1
        loop = asyncio.get_running_loop()
        if link.middlebox:
            await asyncio.sleep(0.0001)  # the box is local: it accepts at once
            self.stats["box_dials"] += 1
            conn = self._new_conn(link, box=True)
            reader, writer = self._make_end(conn, src, (f"n{dst}", 7000 + dst), client=True)
            loop.call_later(self.latency(link), self._box_try, conn)
            return reader, writer
        # SYN retransmissions while the link is held (1 s, 2 s, 4 s apart, as Linux)
        start = loop.time()
        rto = 1.0
        while True:
            await asyncio.sleep(self.latency(link))
            if not link.held:
                break
            self.stats["syn_held"] += 1
            await asyncio.sleep(max(0.0, start + rto - loop.time()))
            rto *= 2
        if dst not in self.listeners:
            self.stats["refused"] += 1
            raise ConnectionRefusedError(f"connection to n{dst} refused")
        await asyncio.sleep(self.latency(link))  # the SYN-ACK
        server = self.listeners.get(dst)
        if server is None:
            raise ConnectionRefusedError(f"connection to n{dst} refused")
        conn = self._new_conn(link, box=False)
        reader, writer = self._make_end(conn, src, (f"n{dst}", 7000 + dst), client=True)
        self._accept(conn, server)
        return reader, writer

    def _new_conn(self, link: Link, box: bool) -> _Conn:
        self.ids += 1
        conn = self.conns[self.ids] = _Conn(self, self.ids, link, box)
        if len(self.conns) > 64 and self.ids % 32 == 0:
            self._prune()
        return conn

    def _prune(self) -> None:
        for cid, c in list(self.conns.items()):
            ends = [e for e in (c.client, c.server) if e is not None]
            if all(e.closing and (not e.pipe or c.blackholed) for e in ends) or (
                    c.server is None and c.client is not None and c.client.closing):
                del self.conns[cid]

    def _make_end(self, conn: _Conn, owner: int, peer: tuple[str, int], client: bool
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2 ** 16, loop=loop)
        proto = asyncio.StreamReaderProtocol(reader, loop=loop)
        end = _End(conn, owner, peer)
        end.protocol = proto
        if client:
            conn.client = end
        else:
            conn.server = end
        proto.connection_made(end)
        writer = asyncio.StreamWriter(end, proto, reader, loop)
        return reader, writer

    def _accept(self, conn: _Conn, server: _Server) -> None:
        src = conn.link.src
        reader, writer = self._make_end(conn, server.node, (f"n{src}", 40000 + conn.id),
                                        client=False)
        nn = self.nets[server.node]
        task = asyncio.ensure_future(server.cb(reader, writer))
        nn.tasks[task] = None
        task.add_done_callback(lambda t: nn.tasks.pop(t, None))
        assert conn.client is not None
        conn.client.kick()

    def _box_try(self, conn: _Conn) -> None:
        """The middlebox connects onward (again)."""
        client = conn.client
        if conn.server is not None or client is None or conn.id not in self.conns \
                or conn.blackholed:
            return
        if client.closing:  # the client gave up: the box drops its half
            del self.conns[conn.id]
            return
        link = conn.link
        if link.held:
            return  # heal() calls us again
        server = self.listeners.get(link.dst)
        if server is not None:
            self.stats["box_connected"] += 1
            self._accept(conn, server)
            return
        self.stats["box_target_down"] += 1
        if link.box_mode == "hang":  # a proxy that keeps the client and retries its backend
            asyncio.get_running_loop().call_later(0.5, self._box_try, conn)
            return
        if link.box_mode == "sink":  # its onward connect went to a dead address: for ever
            conn.blackholed = True
            return
        if link.box_mode == "eof":  # the box closes the client's side (Docker's proxy)
            conn.broken = True  # later writes reach nobody: the box answers with a reset
            client.pipe.clear()
            client.pipe_bytes = 0
            client._receive("eof")
            client._maybe_resume_writing()
        else:
            del self.conns[conn.id]
            client.lose(ConnectionResetError("connection reset by the middlebox"))

    # ---------------------------------------------------------------- frames (for the checks)
    def on_write(self, end: _End, data: bytes) -> None:
        if end.dead:
            return
        buf = end.parse
        buf += data
        while len(buf) >= 4:
            (size,) = _LEN.unpack_from(buf, 0)
            if len(buf) < 4 + size:
                break
            body = bytes(buf[4 : 4 + size])
            del buf[: 4 + size]
            try:
                frame = decode_body(body)
            except FrameError:
                continue
            self.on_frame(end.owner, frame)
            if self.frame_hook is not None:
                self.frame_hook(end.conn, end.owner, frame)

    # ---------------------------------------------------------------- faults
    def conns_of(self, src: int, dst: int) -> list[_Conn]:
        return [c for c in self.conns.values() if c.link.src == src and c.link.dst == dst]

    def hold(self, src: int, dst: int) -> None:
        link = self.link(src, dst)
        link.holds += 1
        self.stats["holds"] += 1

    def unhold(self, src: int, dst: int) -> None:
        link = self.link(src, dst)
        if link.holds <= 0:
            return
        link.holds -= 1
        if not link.held:
            self._healed(link)

    def _healed(self, link: Link) -> None:
        for conn in list(self.conns.values()):
            if conn.link is not link:
                continue
            if conn.box and conn.server is None:
                self._box_try(conn)
            for end in (conn.client, conn.server):
                if end is not None:
                    end.kick()

    def heal_all(self) -> None:
        for link in self.links.values():
            link.spike_until = 0.0
            if link.holds:
                link.holds = 0
                self._healed(link)

    def reset(self, conn: _Conn) -> None:
        """Both ends see a reset now (a middlebox or firewall reset the connection)."""
        self.stats["resets"] += 1
        for end in (conn.client, conn.server):
            if end is not None and not end.closing:
                end.lose(ConnectionResetError("connection reset by the network"))

    def blackhole(self, conn: _Conn) -> None:
        """Nothing moves on ``conn`` any more, and nobody is told (a NAT or a proxy lost its
        state): the ends must find out by themselves."""
        self.stats["blackholes"] += 1
        conn.blackholed = True

    def drop(self, conn: _Conn) -> None:
        """Both ends see EOF now; later writes are answered by a reset."""
        if conn.server is None or conn.client is None:
            self.reset(conn)
            return
        self.stats["drops"] += 1
        conn.broken = True
        for end in (conn.client, conn.server):
            end.pipe.clear()
            end.pipe_bytes = 0
            end._receive("eof")
            end._maybe_resume_writing()

    def kill(self, node: int) -> None:
        """``node``'s process died: its listener is gone, its sockets are closed by the kernel
        (the other ends see FIN or RST, through a middlebox always FIN)."""
        self.listeners.pop(node, None)
        for conn in list(self.conns.values()):
            for end in (conn.client, conn.server):
                if end is not None and end.owner == node and not end.dead:
                    if conn.server is None:  # the box had not reached the target yet
                        end.dead = end.closing = end.lost_called = True
                        self.conns.pop(conn.id, None)
                        continue
                    end.kill(fin=conn.box or self.rng.random() < 0.5)


# ---------------------------------------------------------------------------------------------
# the state machine


class SmDisk:
    """What a node's state machine keeps across crashes: the applied entries (term, payload)
    of indexes 1..n; only the first ``synced`` are sure to survive a crash."""

    def __init__(self) -> None:
        self.log: list[tuple[int, bytes]] = []
        self.synced = 0

    def crash(self, rng: random.Random) -> int:
        """Lose some of the unsynced applies; how many were lost."""
        keep = self.synced + rng.randint(0, len(self.log) - self.synced)
        lost = len(self.log) - keep
        del self.log[keep:]
        self.synced = keep
        return lost


class _Copy:
    """What ``SnapshotStore.create`` copies (duck-typed ``Store.copy_to``)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def copy_to(self, directory: str | Path) -> None:
        (Path(directory) / "data.mdb").write_bytes(self.data)


class _Install:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.reached: asyncio.Future[None] = loop.create_future()
        self.resume: asyncio.Future[None] = loop.create_future()


class SimSM:
    """A ``StateMachine``: applies entries asynchronously (like the real writer thread), takes a
    snapshot every ``snapshot_every`` applied entries, installs received ones."""

    def __init__(self, cluster: Cluster, host: Host) -> None:
        self.c = cluster
        self.h = host
        self.disk = host.disk
        self.applied = len(self.disk.log)
        self.last_snap = 0  # the newest snapshot's index (set in attach)
        self.node: RaftNode | None = None
        self.queue: deque[list[Entry] | _Install] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.installing = False
        self.seq: list[int] = []  # indexes applied by this instance, in order

    def attach(self, node: RaftNode) -> None:
        self.node = node
        latest = node.snapshots.latest()
        if latest is not None:
            self.last_snap = max(self.last_snap, latest[0].index)
        self.task = asyncio.ensure_future(self._run())

    def applied_index(self) -> int:
        return self.applied

    def apply_entries(self, entries: list[Entry]) -> None:
        self.c.check_persisted(self.h, entries)
        self.queue.append(list(entries))
        self.wake.set()

    async def install_snapshot(self, meta: SnapshotMeta, data_file: Path) -> None:
        inst = _Install(asyncio.get_running_loop())
        self.queue.append(inst)
        self.wake.set()
        await inst.reached
        self.installing = True
        try:
            await asyncio.sleep(self.h.install_delay())
            raw = msgpack.unpackb(data_file.read_bytes())
            log = [(int(t), bytes(p)) for t, p in raw]
            if len(log) != meta.index:
                self.c.fail(f"node {self.h.id}: snapshot {meta.index} holds {len(log)} entries")
            for k, (t, p) in enumerate(log, 1):
                self.c.check_chosen(self.h, k, t, p)
            self.disk.log[:] = log
            self.disk.synced = len(log)
            self.applied = meta.index
            self.last_snap = meta.index
            self.seq.append(-meta.index)
            self.c.stats["snapshots_installed"] += 1
            self.c.trace("install", self.h.id, meta.index, meta.term)
            self.c.crash_point(self.h, "installed")  # the store has it, the log not yet
        finally:
            self.installing = False
            self.h.installing = max(0, self.h.installing - 1)
            if not inst.resume.done():  # (cancelled with the worker when the node crashes)
                inst.resume.set_result(None)

    async def _run(self) -> None:
        c, h = self.c, self.h
        while True:
            while not self.queue:
                self.wake.clear()
                await self.wake.wait()
            item = self.queue.popleft()
            if isinstance(item, _Install):
                item.reached.set_result(None)
                await item.resume
                continue
            skipped = [e for e in item if e.index <= self.applied]
            if skipped:
                c.stats["apply_skipped"] += len(skipped)
            entries = [e for e in item if e.index > self.applied]
            if not entries:
                continue
            await asyncio.sleep(h.apply_delay())
            # nothing else moved self.applied meanwhile (installs are queued behind us)
            expect = self.applied + 1
            for e in entries:
                if e.index != expect:
                    c.fail(f"node {h.id}: applies entry {e.index} after {expect - 1} "
                           f"(a gap or a repeat)")
                expect += 1
                c.check_chosen(h, e.index, e.term, e.data)
                self.disk.log.append((e.term, e.data))
                self.seq.append(e.index)
            self.applied = entries[-1].index
            c.stats["applied"] += len(entries)
            if c.rng.random() < c.cfg.sync_p:
                self.disk.synced = len(self.disk.log)
            assert self.node is not None
            self.node.on_applied([(e.index, e.term, e.data) for e in entries])
            if self.applied - self.last_snap >= c.cfg.snapshot_every:
                await self._snapshot(entries[-1])

    async def _snapshot(self, last: Entry) -> None:
        node = self.node
        assert node is not None
        await asyncio.sleep(self.h.disk_delay())
        self.disk.synced = len(self.disk.log)  # env.sync before the copy
        members = node.membership_at(last.index)
        meta = SnapshotMeta(last.index, last.term, tuple(sorted(members)),
                            tuple(sorted(members.items())))
        data = msgpack.packb([[t, p] for t, p in self.disk.log[: last.index]],
                             use_bin_type=True)
        node.snapshots.create(cast(Any, _Copy(data)), meta)
        self.last_snap = last.index
        self.c.stats["snapshots_taken"] += 1
        self.c.crash_point(self.h, "snapshot_created")
        # the real writer thread hands it to the loop (call_soon): the log is compacted later
        await asyncio.sleep(self.c.rng.random() * 0.002)
        node.on_snapshot_taken(meta)


# ---------------------------------------------------------------------------------------------
# the cluster




@dataclass
class SimConfig:
    n: int = 3
    snapshot_every: int = 25
    hwm: int = 16 * 1024
    election_timeout: float = 0.150
    heartbeat_timeout: float = 0.050
    fsync: tuple[float, float] = (0.0, 0.004)  # a blocking call's usual virtual duration
    slow_fsync_p: float = 0.02  # ... and sometimes 50 ms
    apply: tuple[float, float] = (0.0, 0.002)
    sync_p: float = 0.3  # an apply batch is made durable (else a crash may lose it)
    client_gap: tuple[float, float] = (0.002, 0.02)
    client_timeout: float = 2.0
    forward_p: float = 0.2  # proposals sent through a follower (transport requests)
    big_payload_p: float = 0.05
    max_inflight: int = 64
    heal_bound: float = 10.0
    crash_point_p: float = 0.003  # a blocking call returns, and the process dies right there
    no_crash_points: tuple[str, ...] = ()  # moments where random runs never crash
    once_per_node: tuple[str, ...] = ()  # ... and where they crash a node at most once
    read_p: float = 0.1  # a client request is a linearizable read (read_barrier)
    transfer_p: float = 0.03  # a nemesis step is a leadership transfer

    @classmethod
    def random(cls, rng: random.Random, n: int) -> SimConfig:
        return cls(n=n, snapshot_every=rng.randint(15, 40),
                   hwm=rng.choice((2048, 8192, 65536)),
                   big_payload_p=rng.choice((0.02, 0.1, 0.3)),
                   sync_p=rng.choice((0.0, 0.3, 1.0)),
                   client_gap=rng.choice(((0.002, 0.01), (0.002, 0.02), (0.01, 0.05))),
                   forward_p=rng.choice((0.0, 0.2, 0.5)),
)


class Host:
    """One node's identity, disk and current incarnation."""

    def __init__(self, cluster: Cluster, node_id: int, base: Path) -> None:
        self.c = cluster
        self.id = node_id
        self.addr = f"n{node_id}:{7000 + node_id}"
        self.dir = base / f"n{node_id}"
        self.disk = SmDisk()
        self.node: RaftNode | None = None
        self.sm: SimSM | None = None
        self.incarnation = 0
        self.durable_hi = 0  # highest index ever made durable (entries or snapshot)
        self.slow_until = 0.0
        self.slow_install_until = 0.0
        self.slow_apply_until = 0.0
        self.busy = False  # a crash or restart is in progress
        self.installing = 0  # snapshot installs in progress (from adopt to the state machine)
        self.dying: tuple[RaftNode, list[asyncio.Task[Any]]] | None = None
        self.blocking_calls = 0

    @property
    def up(self) -> bool:
        return self.node is not None

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def disk_delay(self) -> float:
        r = self.c.rng
        lo, hi = self.c.cfg.fsync
        d = lo + r.random() * (hi - lo)
        if r.random() < self.c.cfg.slow_fsync_p:
            d += 0.05
        if self.slow_until > self.now():
            d += 0.01 + r.random() * 0.2
        return d

    def apply_delay(self) -> float:
        lo, hi = self.c.cfg.apply
        d = lo + self.c.rng.random() * (hi - lo)
        if self.slow_apply_until > self.now():
            d += 0.3
        return d

    def install_delay(self) -> float:
        d = self.disk_delay()
        if self.slow_install_until > self.now():
            d += 0.5
        return d

    def make_blocking(self) -> Callable[..., Awaitable[Any]]:
        inc = self.incarnation

        async def run_blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            delay = self.disk_delay()
            if getattr(fn, "__name__", "") == "adopt":  # a snapshot install begins
                self.installing += 1
                if self.slow_install_until > self.now():
                    delay += 1.0
            await asyncio.sleep(delay)
            if self.incarnation != inc or self.node is None:
                raise asyncio.CancelledError  # a dead process does no more I/O
            self.blocking_calls += 1
            result = fn(*args, **kwargs)
            self.c.crash_point(self, getattr(fn, "__name__", "call"))  # e.g. fsynced, unsent
            return result

        return run_blocking


@dataclass
class Result:
    seed: int
    stats: Counter[str]
    trace: str
    virtual_s: float


class Cluster:
    def __init__(self, seed: int, base: Path, cfg: SimConfig | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.cfg = cfg or SimConfig()
        self.base = base
        self._trace = hashlib.sha256()
        self.stats: Counter[str] = Counter()
        self.net = SimNetwork(self.rng, self.cfg.hwm, self.on_frame, self.trace)
        self.ids = tuple(range(1, self.cfg.n + 1))
        self.hosts = {i: Host(self, i, base) for i in self.ids}
        for i in self.ids:
            self.net.add_node(i, self.hosts[i].addr)
        self.leaders: dict[int, int] = {}  # term -> leader
        self.chosen: dict[int, tuple[int, bytes]] = {}  # index -> (term, payload)
        self.acked: dict[bytes, int] = {}  # payload -> index
        self.counter = 0
        self.inflight = 0
        self.violation: Violation | None = None
        self._failed: asyncio.Future[None] | None = None
        self._tasks: dict[asyncio.Task[Any], None] = {}
        self.clients_on = False
        self.crash_points = False
        self.forced_crashes: dict[tuple[int, str], bool] = {}  # (node, where): crash there
        self._crashed_once: dict[int, str] = {}
        self.acked_max = 0
        self.errors: list[str] = []

    # ---------------------------------------------------------------- plumbing
    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def trace(self, *what: Any) -> None:
        self._trace.update(repr((round(self.now(), 6), *what)).encode())

    def fail(self, what: str) -> None:
        """Record a violation (the first one ends the run) and raise it."""
        v = Violation(f"seed={self.seed} t={self.now():.3f}: {what}")
        if self.violation is None:
            self.violation = v
            if self._failed is not None and not self._failed.done():
                self._failed.set_exception(v)
        raise v

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks[task] = None
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, Violation):
            self.errors.append(f"{type(exc).__name__}: {exc}")
            if self._failed is not None and not self._failed.done():
                self._failed.set_exception(exc)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        exc = ctx.get("exception")
        msg = str(ctx.get("message"))
        if exc is None or isinstance(exc, asyncio.CancelledError):
            return
        if isinstance(exc, Violation):
            return  # already recorded by fail()
        self.errors.append(f"{msg}: {type(exc).__name__}: {exc}")

    def live(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.node is not None]

    def leader(self) -> Host | None:
        for h in self.live():
            assert h.node is not None
            if h.node.is_leader():
                return h
        return None

    # ---------------------------------------------------------------- node lifecycle
    async def start_node(self, i: int) -> None:
        h = self.hosts[i]
        assert h.node is None
        h.incarnation += 1
        cfg = NodeConfig(node_id=i, raft_addr=h.addr,
                         peers={j: self.hosts[j].addr for j in self.ids}, data_dir=h.dir,
                         election_timeout=self.cfg.election_timeout,
                         heartbeat_timeout=self.cfg.heartbeat_timeout,
                         network=self.net.nets[i], run_blocking=h.make_blocking())
        sm = SimSM(self, h)
        node = RaftNode(cfg, sm, rng=random.Random(self.rng.random()))
        self._wrap_log(h, node)
        node.on_event = lambda level, msg, fields: self.on_event(i, msg, fields)
        node.request_handlers["fwd"] = self._forward_handler(node)
        t = node.transport
        received = t._on_snapshot

        async def on_snapshot(frm: int, meta: Frame, path: Path) -> bool:
            if h.installing:
                self.stats["snapshot_received_while_installing"] += 1
                self.trace("snapshot-while-installing", i)
            return await received(frm, meta, path)

        t._on_snapshot = on_snapshot
        h.node, h.sm = node, sm
        sm.attach(node)
        await node.start()
        self.trace("start", i, h.incarnation, sm.applied)

    def _wrap_log(self, h: Host, node: RaftNode) -> None:
        log = node.log
        save, compact = log.save, log.compact

        def saved(hard_state: Any = None, entries: Any = (), snapshot: Any = None) -> None:
            save(hard_state, entries, snapshot)
            if entries:
                h.durable_hi = max(h.durable_hi, entries[-1].index)
            if snapshot is not None:
                h.durable_hi = max(h.durable_hi, snapshot.index)

        def compacted(index: int, *args: Any, **kwargs: Any) -> None:
            compact(index, *args, **kwargs)
            h.durable_hi = max(h.durable_hi, index)

        setattr(log, "save", saved)  # noqa: B010 (an instance attribute shadows the method)
        setattr(log, "compact", compacted)  # noqa: B010

    def node_tasks(self, h: Host) -> list[asyncio.Task[Any]]:
        node = h.node
        assert node is not None
        t = node.transport
        tasks: list[asyncio.Task[Any]] = [*node._tasks, *node._side]
        tasks += [p.task for p in t._peers.values() if p.task is not None]
        tasks += [*t._inbound, *t._answers, *self.net.nets[h.id].tasks]
        if h.sm is not None and h.sm.task is not None:
            tasks.append(h.sm.task)
        uniq = {id(x): x for x in tasks}
        return sorted(uniq.values(), key=_task_order)

    def crash_now(self, h: Host) -> None:
        """The instant of death: ``h``'s sockets are closed by its kernel, its memory is
        gone; the clean-up (cancelling its tasks, closing its files) follows in ``crash``."""
        node = h.node
        assert node is not None and not h.busy
        h.busy = True
        self.stats["crashes"] += 1
        self._count_links(node)
        self.trace("crash", h.id)
        h.dying = (node, self.node_tasks(h))
        self.net.kill(h.id)
        h.node = None
        h.sm = None
        h.installing = 0
        self.stats["sm_lost_applies"] += h.disk.crash(self.rng)

    async def crash(self, i: int) -> None:
        h = self.hosts[i]
        if h.node is not None and not h.busy:
            self.crash_now(h)
        if h.dying is None:
            return
        node, tasks = h.dying
        h.dying = None
        try:
            for _ in range(50):
                for task in tasks:
                    task.cancel()
                tasks = [t for t in tasks if not t.done()]
                if not tasks:
                    break
                await asyncio.wait(tasks, timeout=0.01)
            else:
                self.fail(f"node {i}: tasks survived the crash: {tasks}")
            if node.failed is not None:
                self.fail(f"node {i}: the raft loop had died: {node.failed!r}")
        finally:
            node.log.close()
            h.busy = False

    def crash_point(self, h: Host, where: str) -> None:
        """Maybe die right here (inside a task of ``h``): raises CancelledError so that the
        calling task stops at this instant, as the process would."""
        if h.node is None or h.busy:
            return
        if self.forced_crashes.pop((h.id, where), None) is not None:
            self.stats[f"crash_point_{where}"] += 1
            self.trace("forced-crash-point", h.id, where)
            self.crash_now(h)
            self.spawn(self.crash(h.id))
            raise asyncio.CancelledError
        if not self.crash_points or where in self.cfg.no_crash_points:
            return
        p = self.cfg.crash_point_p
        if where != "saved":  # (the wrapped RaftLog.save: the most frequent by far)
            p *= 30  # the rarer moments (snapshots, compaction, membership) get more than it
        if self.rng.random() >= p:
            return
        down = sum(1 for x in self.hosts.values() if x.node is None or x.busy)
        if down >= (len(self.ids) - 1) // 2:
            return
        if where in self.cfg.once_per_node:
            if h.id in self._crashed_once:
                return
            self._crashed_once[h.id] = where
        self.stats[f"crash_point_{where}"] += 1
        self.trace("crash-point", h.id, where)
        self.crash_now(h)
        self.spawn(self.crash(h.id))
        self.later(0.05 + self.rng.random() * 2.0, functools.partial(self.restart, h.id))
        raise asyncio.CancelledError

    async def restart(self, i: int) -> None:
        h = self.hosts[i]
        for _ in range(500):  # a crash's clean-up may still be under way
            if not h.busy:
                break
            await asyncio.sleep(0.01)
        if h.node is not None or h.busy:
            return
        h.busy = True
        self.stats["restarts"] += 1
        try:
            await self.start_node(i)
        finally:
            h.busy = False

    def _count_links(self, node: RaftNode) -> None:
        for st in node.transport.link_stats().values():
            self.stats["watchdog_reconnects"] += int(st["reconnects"])
            self.stats["queue_dropped"] += int(st["dropped"])

    # ---------------------------------------------------------------- checks
    def on_event(self, i: int, msg: str, fields: dict[str, Any]) -> None:
        self.trace("event", i, msg, sorted(fields.items()))
        if msg.startswith("raft leader changed"):
            term, lead = int(fields["term"]), int(fields["leader"])
            prev = self.leaders.setdefault(term, lead)
            if lead == i and prev == i:
                self.stats["leaderships"] += 1
            if prev != lead:
                self.fail(f"election safety: node {i} follows {lead} in term {term}, "
                          f"but {prev} led it")

    def check_chosen(self, h: Host, index: int, term: int, data: bytes) -> None:
        got = self.chosen.setdefault(index, (term, data))
        if got != (term, data):
            self.fail(f"state machine safety: node {h.id} applies {(term, data[:20])} at "
                      f"index {index}, elsewhere {(got[0], got[1][:20])}")

    def check_persisted(self, h: Host, entries: list[Entry]) -> None:
        """Persist-before-apply: what the state machine is handed is durable."""
        node = h.node
        assert node is not None
        snap = node.log.snapshot()
        covered = snap.index if snap is not None else 0
        for e in entries:
            self.stats["checked_apply"] += 1
            if e.index <= covered:
                continue
            durable = node.log.entry(e.index)
            if durable is None or durable.term != e.term:
                self.fail(f"persist-before-apply: node {h.id} hands entry {e.index}@{e.term} "
                          f"to the state machine but its durable log has {durable}")

    def on_frame(self, i: int, frame: Frame) -> None:
        kind = frame.get("k")
        self.stats[f"frames_{kind}"] += 1
        if kind == "hello" and frame.get("ch") == "snap":
            self.stats["snapshot_sends"] += 1
        if kind != "m":
            return
        h = self.hosts[i]
        m = from_wire(frame["m"])
        if m.type == MsgType.APP_RESP and not m.reject and m.index:
            self.stats["checked_send"] += 1
            if h.durable_hi < m.index:
                self.fail(f"persist-before-send: node {i} acknowledges index {m.index} to "
                          f"node {m.to} but its log is durable only up to {h.durable_hi}")
        elif m.type == MsgType.VOTE_RESP and not m.reject:
            self.stats["checked_send"] += 1
            node = h.node
            assert node is not None
            hs = node.log.hard_state()
            if hs.term < m.term or (hs.term == m.term and hs.vote != m.to):
                self.fail(f"persist-before-send: node {i} grants its vote to node {m.to} in "
                          f"term {m.term} but its durable hard state is {hs}")

    async def monitor(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            for h in self.live():
                node = h.node
                assert node is not None
                if node.failed is not None:
                    self.fail(f"node {h.id}: the raft loop died: {node.failed!r}")
                if node.is_leader():
                    prev = self.leaders.setdefault(node.core.term, h.id)
                    if prev != h.id:
                        self.fail(f"election safety: {prev} and {h.id} both lead term "
                                  f"{node.core.term}")

    def converged(self) -> bool:
        hosts = list(self.hosts.values())
        if any(h.node is None or h.busy for h in hosts):
            return False
        nodes = [h.node for h in hosts if h.node is not None]
        leaders = [n for n in nodes if n.is_leader()]
        if len(leaders) != 1:
            return False
        ld = leaders[0]
        for n in nodes:
            st = n.core
            if st.term != ld.core.term or st.lead != ld.id or st.commit != ld.core.commit:
                return False
            if n.applied != st.commit or st.commit != ld.core.last_index():
                return False
        for h in hosts:
            assert h.sm is not None and h.node is not None
            if h.sm.applied != h.node.applied or h.sm.queue:
                return False
            for p in self.ids:
                if p != h.id and not h.node.transport.connected(p):
                    return False
        return True

    def describe(self) -> str:
        out = []
        for h in self.hosts.values():
            if h.node is None:
                out.append(f"n{h.id}: down")
                continue
            st = h.node.core
            links = {p: ("up" if s["connected"] else "DOWN") + f"/q{s['queued']}"
                     for p, s in h.node.transport.link_stats().items()}
            out.append(f"n{h.id}: {st.role.label} term={st.term} lead={st.lead} "
                       f"commit={st.commit} last={st.last_index()} "
                       f"applied={h.node.applied} sm={h.sm.applied if h.sm else None} "
                       f"links={links}")
        return "; ".join(out)

    async def wait_converged(self, bound: float | None = None) -> float:
        """Wait until converged; the virtual seconds it took (a Violation after ``bound``)."""
        bound = self.cfg.heal_bound if bound is None else bound
        start = self.now()
        while self.now() - start < bound:
            if self.converged():
                return self.now() - start
            await asyncio.sleep(0.01)
        self.fail(f"no convergence within {bound:.0f} s after the heal: {self.describe()}")
        raise AssertionError("unreachable")

    def final_checks(self) -> None:
        ref: list[tuple[int, bytes]] | None = None
        for h in self.hosts.values():
            log = h.disk.log
            for data, index in self.acked.items():
                if index > len(log) or log[index - 1][1] != data:
                    self.fail(f"durability: acknowledged {data[:20]!r} at index {index} is "
                              f"not applied on node {h.id}")
            if ref is None:
                ref = log
            elif log != ref:
                self.fail(f"state machines differ after the heal on node {h.id}")

    # ---------------------------------------------------------------- clients
    def _forward_handler(self, node: RaftNode
                         ) -> Callable[[int, Frame], Awaitable[Frame]]:
        async def handle(frm: int, body: Frame) -> Frame:
            try:
                index, _ = await node.propose(bytes(body["d"]), self.cfg.client_timeout / 2)
            except (NotLeader, ProposalDropped, TimeoutError) as exc:
                return {"err": type(exc).__name__}
            return {"i": index}

        return handle

    def payload(self) -> bytes:
        self.counter += 1
        tag = b"p%d:" % self.counter
        size = self.rng.randint(1, 2000) if self.rng.random() < self.cfg.big_payload_p \
            else self.rng.randint(0, 60)
        return tag + b"x" * size

    async def clients(self) -> None:
        lo, hi = self.cfg.client_gap
        while self.clients_on:
            await asyncio.sleep(lo + self.rng.random() * (hi - lo))
            if self.inflight >= self.cfg.max_inflight:
                continue
            ld = self.leader()
            if ld is None:
                continue
            if self.rng.random() < self.cfg.read_p:
                self.spawn(self.read(ld))
                continue
            via = ld
            if self.rng.random() < self.cfg.forward_p:
                others = [h for h in self.live() if h is not ld]
                if others:
                    via = self.rng.choice(others)
            self.spawn(self.propose(via, ld.id, self.payload()))

    async def propose(self, via: Host, leader: int, data: bytes) -> int | None:
        """Propose ``data`` on ``via`` (the leader, or forwarded by a follower to
        ``leader``); the index when acknowledged."""
        node = via.node
        if node is None:
            return None
        self.inflight += 1
        self.stats["proposed"] += 1
        try:
            if via.id == leader:
                index, result = await node.propose(data, self.cfg.client_timeout)
                if result != data:
                    self.fail(f"node {via.id} answered {result!r} for {data[:20]!r}")
            else:
                self.stats["forwarded"] += 1
                resp = await node.transport.request(leader, {"op": "fwd", "d": data},
                                                    self.cfg.client_timeout)
                if "i" not in resp:
                    return None
                index = int(resp["i"])
                self.stats["acked_forwarded"] += 1
        except (NotLeader, ProposalDropped, TimeoutError, NotSent, ConnectionError):
            return None
        finally:
            self.inflight -= 1
        self.acked[data] = index
        self.acked_max = max(self.acked_max, index)
        self.stats["acked"] += 1
        self.trace("acked", index)
        return index

    async def read(self, h: Host) -> None:
        """A linearizable read on the leader: it must see every write acknowledged before it
        began."""
        node = h.node
        if node is None:
            return
        floor = self.acked_max
        self.inflight += 1
        try:
            await node.read_barrier(1.0)
        except (NotLeader, TimeoutError):
            return
        finally:
            self.inflight -= 1
        if h.node is not node or h.sm is None:
            return
        if node.applied < floor or h.sm.applied < floor:
            self.fail(f"stale read on node {h.id}: applied {node.applied} (state machine "
                      f"{h.sm.applied}) < {floor}, acknowledged before the read began")
        self.stats["reads"] += 1

    async def stop_clients(self) -> None:
        self.clients_on = False
        while self.inflight:
            await asyncio.sleep(0.01)

    def start_clients(self) -> None:
        self.clients_on = True
        self.spawn(self.clients())

    # ---------------------------------------------------------------- faults
    def later(self, delay: float, fn: Callable[[], Any]) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            res = fn()
            if asyncio.iscoroutine(res):
                await res

        self.spawn(run())

    def hold_for(self, pairs: Iterable[tuple[int, int]], duration: float) -> None:
        pairs = list(pairs)
        for a, b in pairs:
            self.net.hold(a, b)

        def release() -> None:
            for a, b in pairs:
                self.net.unhold(a, b)

        self.later(duration, release)

    async def heal(self) -> None:
        """The final heal: every link healthy, every node up (middleboxes stay)."""
        self.trace("heal")
        self.net.heal_all()
        for h in self.hosts.values():
            h.slow_until = h.slow_install_until = h.slow_apply_until = 0.0
        for h in self.hosts.values():
            while h.busy:
                await asyncio.sleep(0.01)
            if h.node is None:
                await self.restart(h.id)

    async def nemesis(self, duration: float) -> None:
        """Random faults for ``duration`` virtual seconds."""
        r = self.rng
        end = self.now() + duration
        ids = self.ids
        n = len(ids)
        self.crash_points = True
        while self.now() < end:
            await asyncio.sleep(0.05 + r.random() * 0.6)
            ld = self.leader()
            down = [h.id for h in self.hosts.values() if h.node is None and not h.busy]
            up = [h.id for h in self.live() if not h.busy]
            x = r.random()
            if x < 0.12 and up and len(down) < (n - 1) // 2 + (r.random() < 0.1):
                i = ld.id if ld is not None and r.random() < 0.5 else r.choice(up)
                self.trace("f-crash", i)
                await self.crash(i)
                self.later(0.05 + r.random() * 3.0, functools.partial(self.restart, i))
            elif x < 0.18 and down:
                await self.restart(r.choice(down))
            elif x < 0.30:  # one direction of a link
                a, b = r.sample(ids, 2)
                if ld is not None and r.random() < 0.5:
                    a = ld.id
                    b = r.choice([j for j in ids if j != a])
                self.stats["hold_one_way"] += 1
                self.hold_for([(a, b)], self._hold_time())
            elif x < 0.38:  # both directions of a link
                a, b = r.sample(ids, 2)
                self.stats["hold_both_ways"] += 1
                self.hold_for([(a, b), (b, a)], self._hold_time())
            elif x < 0.45:  # isolate a node (the leader, half of the time)
                i = ld.id if ld is not None and r.random() < 0.5 else r.choice(ids)
                self.stats["isolations"] += 1
                self.hold_for(self._all_links(i), self._hold_time())
            elif x < 0.50:  # a partition
                shuffled = list(ids)
                r.shuffle(shuffled)
                k = r.randint(1, n // 2)
                side = set(shuffled[:k])
                pairs = [(a, b) for a in ids for b in ids
                         if a != b and (a in side) != (b in side)]
                self.stats["partitions"] += 1
                self.hold_for(pairs, self._hold_time())
            elif x < 0.60:  # reset connections of a link
                a, b = r.sample(ids, 2)
                for conn in self.net.conns_of(a, b):
                    if r.random() < 0.7:
                        self.net.reset(conn)
            elif x < 0.64:  # drop connections of a link (EOF)
                a, b = r.sample(ids, 2)
                for conn in self.net.conns_of(a, b):
                    self.net.drop(conn)
            elif x < 0.66:  # a connection silently lost forever
                a, b = r.sample(ids, 2)
                conns = self.net.conns_of(a, b)
                if conns:
                    self.net.blackhole(r.choice(conns))
            elif x < 0.72:  # a middlebox appears or goes (new connections only)
                a, b = r.sample(ids, 2)
                link = self.net.link(a, b)
                link.middlebox = not link.middlebox
                link.box_mode = r.choice(("reset", "eof", "hang", "sink"))
                self.stats["middlebox_toggles"] += 1
            elif x < 0.78:  # a latency spike
                a, b = r.sample(ids, 2)
                for link in (self.net.link(a, b), self.net.link(b, a)):
                    link.spike = r.choice((0.02, 0.1, 0.3))
                    link.spike_until = self.now() + 0.2 + r.random() * 2
                self.stats["latency_spikes"] += 1
            elif x < 0.84:  # a slow disk
                i = r.choice(ids)
                self.hosts[i].slow_until = self.now() + 0.2 + r.random() * 2
                if r.random() < 0.3:
                    self.hosts[i].slow_install_until = self.hosts[i].slow_until
                if r.random() < 0.3:
                    self.hosts[i].slow_apply_until = self.hosts[i].slow_until
                self.stats["slow_disks"] += 1
            elif 0.90 <= x < 0.90 + self.cfg.transfer_p and ld is not None:
                self.spawn(self.transfer(ld))
            elif x < 0.90 and ld is not None:  # a follower lags, then catches up by snapshot
                i = r.choice([j for j in ids if j != ld.id])
                self.stats["lag_for_snapshot"] += 1
                lag = 1.0 + r.random() * 3
                self.hold_for(self._all_links(i), lag)
                if r.random() < 0.5:  # its install is slow and its answers come late: the
                    # leader compacts again meanwhile and sends a newer snapshot during it
                    self.hosts[i].slow_install_until = self.now() + lag + 2
                    back = self.net.link(i, ld.id)
                    back.spike, back.spike_until = 0.3, self.now() + lag + 2
                self.later(lag, functools.partial(self.flap, i, 1.5))

    async def transfer(self, h: Host) -> None:
        node = h.node
        if node is None:
            return
        self.stats["transfers"] += 1
        try:
            await node.transfer_leadership(0, 1.0)
            self.stats["transfers_done"] += 1
        except (NotLeader, TimeoutError, ValueError):
            pass

    def _hold_time(self) -> float:
        r = self.rng.random()
        if r < 0.5:
            return 0.05 + self.rng.random() * 0.5
        if r < 0.9:
            return 0.5 + self.rng.random() * 3
        return 4 + self.rng.random() * 6

    def _all_links(self, i: int) -> list[tuple[int, int]]:
        return [p for j in self.ids if j != i for p in ((i, j), (j, i))]

    async def flap(self, i: int, duration: float) -> None:
        """Reset or drop some of ``i``'s connections now and then for ``duration``."""
        end = self.now() + duration
        while self.now() < end:
            await asyncio.sleep(0.05 + self.rng.random() * 0.4)
            j = self.rng.choice([k for k in self.ids if k != i])
            a, b = (i, j) if self.rng.random() < 0.5 else (j, i)
            for conn in self.net.conns_of(a, b):
                if self.rng.random() < 0.5:
                    self.net.reset(conn)
                else:
                    self.net.drop(conn)
            self.stats["flaps"] += 1

    # ---------------------------------------------------------------- runs
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_error)
        self._failed = loop.create_future()
        self.spawn(self.monitor())
        for i in self.ids:
            await self.start_node(i)

    async def wait_leader(self, bound: float = 10.0) -> Host:
        start = self.now()
        while self.now() - start < bound:
            ld = self.leader()
            if ld is not None:
                return ld
            await asyncio.sleep(0.01)
        self.fail(f"no leader within {bound} s: {self.describe()}")
        raise AssertionError("unreachable")

    async def random_run(self, chaos: float) -> None:
        await self.wait_leader()
        self.start_clients()
        await self.nemesis(chaos)
        self.crash_points = False
        await self.stop_clients()
        await self.heal()
        took = await self.wait_converged()
        self.stats["converge_ms_max"] = max(self.stats["converge_ms_max"], int(took * 1000))
        self.final_checks()

    async def shutdown(self) -> None:
        self.trace("final", self.describe())
        for h in self.hosts.values():
            if h.node is not None:
                self._count_links(h.node)
        for i in self.ids:
            for _ in range(100):
                if not self.hosts[i].busy:
                    break
                await asyncio.sleep(0.01)
            self.stats["crashes"] -= 1 if self.hosts[i].node is not None else 0
            await self.crash(i)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)

    def summary(self) -> Counter[str]:
        out = Counter(self.stats)
        out.update(self.net.stats)
        out["elections"] = len(self.leaders)
        return out

    async def run(self, body: Callable[[Cluster], Awaitable[None]]) -> None:
        await self.start()
        assert self._failed is not None
        task = asyncio.ensure_future(body(self))
        try:
            await asyncio.wait([task, self._failed], return_when=asyncio.FIRST_COMPLETED)
            if self._failed.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                self._failed.result()
            task.result()
            if self.errors:
                raise Violation(f"seed={self.seed}: unexpected errors: {self.errors[:3]}")
        finally:
            if not self._failed.done():
                self._failed.cancel()
            await self.shutdown()


Body = Callable[[Cluster], Awaitable[None]]


def chaos_for(seed: int) -> float:
    """How many virtual seconds of faults seed ``seed`` gets (6 to 12)."""
    return 6.0 + random.Random(seed * 7919).random() * 6


def _task_order(task: asyncio.Task[Any]) -> int:
    name = task.get_name()
    _, _, num = name.rpartition("-")
    return int(num) if num.isdigit() else 0


def run(seed: int, base: Path, body: Body | None = None,
        cfg: SimConfig | None = None, chaos: float = 12.0) -> Result:
    """Run one simulation in a fresh virtual-time loop; ``body`` defaults to a random fault
    schedule of ``chaos`` seconds, a heal and the convergence and durability checks."""
    rng = random.Random(seed)
    if cfg is None:
        cfg = SimConfig.random(rng, 5 if seed % 4 == 3 else 3)
    base.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(seed, base, cfg)

    async def default(c: Cluster) -> None:
        await c.random_run(chaos)

    with asyncio.Runner(loop_factory=VirtualLoop) as runner:
        loop = cast(VirtualLoop, runner.get_loop())
        start = loop.time()
        runner.run(cluster.run(body or default))
        took = loop.time() - start
    return Result(seed, cluster.summary(), cluster._trace.hexdigest(), took)
