"""A listener worker process of ``server.workers``: more LDAP listeners, one writer.

Rules for this module:
- Started by the writer process (``oba.server.workers``) as ``python -m oba.server.worker FD``
  with one end of a Unix socket pair (the channel), one end of a second pair (connections) and
  the connection board; the first message on the channel (``hello``) carries the effective
  configuration, those descriptors and the ACL document in force.
- A worker does not listen: the writer accepts on the LDAP/LDAPS ports and passes it some of
  the connections (SCM_RIGHTS, one kind byte each: L plain, S LDAPS); it serves them as its own
  (LDAPS: the TLS handshake happens here). It reads the same LMDB environment
  as the writer (LMDB allows readers in many processes; a write the writer acknowledged is
  visible to the next read transaction here). It never writes the database: every Command
  goes to the writer over the channel (``ChannelReplicator``), so the single write path,
  group commit and, in cluster mode, Raft stay in one process.
- Linearizable reads in cluster mode ask the writer for a read barrier (``ClusterProxy``).
  Audit records go to the writer's audit store. Change events (persistent search) come from
  the writer, only while a search here is subscribed. ACL documents and hot configuration keys
  come from the writer; it waits for the worker's answer before it reports a change done.
- Bind state stays with its connection. The worker stops on the writer's ``stop`` message, on
  SIGTERM, and at once when the channel closes (the writer is gone): it never serves without a
  writer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from typing import Any

from oba import reqctx
from oba.acl.document import validate_acl
from oba.audit.store import _plain
from oba.cluster.raft_replicator import result_from_wire
from oba.cluster.replicator import Change, ChangeListener
from oba.config import Config
from oba.directory.access import AccessPolicy
from oba.directory.apply import ApplyResult
from oba.directory.commands import Command, decode, encode
from oba.events import ChangeHub, Subscriber, event_from_change
from oba.schema import Schema, default_schema_files
from oba.server.board import ConnectionBoard
from oba.server.channel import Channel, ChannelClosed, Message
from oba.server.listener import LDAPListener
from oba.server.node import Node
from oba.storage import Store

log = logging.getLogger("oba.workers")

UNAVAILABLE = 52
STATS_INTERVAL = 1.0  # seconds between the counters sent to the writer


def write_timeout(config: Config) -> float:
    """How long a worker waits for the writer to answer one write."""
    if config.cluster.enabled:
        return config.cluster.proposalTimeout.total_seconds() + 2.0
    return 30.0


class ChannelReplicator:
    """The worker's write path: each Command is applied by the writer process."""

    def __init__(self, channel: Channel, timeout: float) -> None:
        self.channel = channel
        self.timeout = timeout

    async def submit(self, cmd: Command) -> ApplyResult:
        try:
            answer = await self.channel.call({"t": "submit", "c": encode(cmd)}, self.timeout)
        except (TimeoutError, ChannelClosed) as exc:
            return ApplyResult(UNAVAILABLE, message=f"the writer process did not answer: {exc}")
        return result_from_wire(answer["r"])

    def add_listener(self, listener: ChangeListener) -> None:
        """Changes reach a worker from the writer (see ``WorkerHub``), not from here."""

    def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class ClusterProxy:
    """``node.cluster`` in a worker: what the LDAP connection asks of the cluster."""

    def __init__(self, channel: Channel, timeout: float) -> None:
        self.channel = channel
        self.timeout = timeout

    def is_leader(self) -> bool:
        return True  # the writer decides: a follower answers at once and the read is local

    async def read_barrier(self, timeout: float | None = None) -> None:
        answer = await self.channel.call({"t": "barrier"}, self.timeout)
        error = answer.get("err")
        if error:
            raise RuntimeError(str(error))


class ChannelAudit:
    """``node.audit`` in a worker: records go to the writer's audit store, the ones made in
    one loop iteration in one message."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._pending: list[list[Any]] = []

    def record(self, level: str, message: str, source: str, user: str = "",
               request_id: str = "", **fields: Any) -> None:
        try:
            pending = self._pending
            pending.append([str(level), str(message), str(source), str(user),
                            str(request_id or reqctx.current()),
                            _plain(fields) if fields else {}])
            if len(pending) == 1:
                asyncio.get_running_loop().call_soon(self._flush)
        except Exception:  # auditing must never break the operation it describes
            log.debug("audit record dropped", exc_info=True)

    def _flush(self) -> None:
        records, self._pending = self._pending, []
        if records:
            self.channel.send({"t": "audit", "a": records})


class WorkerHub(ChangeHub):
    """Change events from the writer, asked for only while someone here subscribes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, channel: Channel) -> None:
        super().__init__(loop)
        self.channel = channel

    def subscribe(self, sub: Subscriber) -> Any:
        unsubscribe = super().subscribe(sub)
        if len(self.subscribers) == 1:
            self.channel.send({"t": "want", "on": True})

        def remove() -> None:
            unsubscribe()
            if not self.subscribers:
                self.channel.send({"t": "want", "on": False})

        return remove

    def deliver_wire(self, msg: Message) -> None:
        change = Change(int(msg["i"]), decode(msg["c"]), result_from_wire(msg["r"]))
        self._deliver(event_from_change(change))


class Worker:
    def __init__(self, channel: Channel, hello: Message) -> None:
        self.channel = channel
        self.config = config = Config.model_validate(hello["config"])
        self.stopping = asyncio.Event()
        extra = config.directory.schemaFiles
        self.schema = (
            Schema.load([*default_schema_files(), *extra]) if extra else Schema.default()
        )
        from oba.app import _index_config

        self.store = Store(config.storage.dataDir, self.schema, _index_config(config),
                           map_size=int(config.storage.mapSize))
        base_dn, root_dn = config.directory.baseDN, config.directory.rootDN
        timeout = write_timeout(config)
        self.node = Node(
            config=config, schema=self.schema, store=self.store,
            replicator=ChannelReplicator(channel, timeout),
            access=AccessPolicy(self.schema.normalize_dn(root_dn) if root_dn else ""),
            base_dn=base_dn, base_ndn=self.schema.normalize_dn(base_dn) if base_dn else "",
            root_dn=root_dn, root_ndn=self.schema.normalize_dn(root_dn) if root_dn else "",
            root_password=(config.directory.rootPassword or "").encode(),
            cluster=ClusterProxy(channel, timeout) if config.cluster.enabled else None,
        )
        fd, slots, slot = (int(v) for v in hello["board"])
        self.node.stats.board = ConnectionBoard(fd, slots, slot)
        self.node.access.attach(self.store, self.schema)
        self.set_acl(hello.get("acl"))
        if hello.get("audit"):
            self.node.audit = ChannelAudit(channel)
        self.hub = WorkerHub(asyncio.get_running_loop(), channel)
        self.node.events = self.hub
        self.ldap = LDAPListener(self.node)
        self.ldap.receive_only = True
        self.conns = socket.socket(fileno=int(hello["conns"]))
        self.conns.setblocking(False)
        self.tls: Any = None  # start_ldaps sets it (runtime protocol of oba.server.tls)

    def set_acl(self, acl: Any) -> None:
        if acl is None:
            self.node.access.set_document(None)
        else:
            self.node.access.set_document(validate_acl(acl["document"]), str(acl["source"]))

    def handle(self, msg: Message) -> None:
        kind = msg.get("t")
        if kind == "change":
            self.hub.deliver_wire(msg)
        elif kind == "acl":
            self.set_acl(msg.get("acl"))
            self.channel.reply(msg, {"t": "ok"})
        elif kind == "hot":
            section = getattr(self.config, str(msg["section"]))
            for key, value in dict(msg["values"]).items():
                setattr(section, key, value)
            if msg["section"] == "logging":
                from oba.app import setup_logging

                setup_logging(self.config)
            self.channel.reply(msg, {"t": "ok"})
        elif kind == "ping":
            self.channel.reply(msg, {"t": "pong"})
        elif kind == "stop":
            self.stopping.set()

    async def _report(self) -> None:
        while True:
            self.channel.send({"t": "stats", "s": self.node.stats.snapshot()})
            await asyncio.sleep(STATS_INTERVAL)

    def _receive(self) -> None:
        """Connections the writer accepted and passed here: one message each, a kind byte (L
        plain, S LDAPS), the writer's 8-byte id for it, and the descriptor; ``got`` tells the
        writer it may close its copy."""
        while True:
            try:
                kinds, fds, _, _ = socket.recv_fds(self.conns, 16, 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.stopping.set()
                return
            if not kinds and not fds:  # the writer closed its end
                self.stopping.set()
                return
            for fd in fds[1:]:  # one descriptor per message: anything else is not ours
                os.close(fd)
            if not fds or len(kinds) != 9:
                continue
            self.ldap.serve_socket(socket.socket(fileno=fds[0]), kinds[:1] == b"S")
            self.channel.send({"t": "got", "i": int.from_bytes(kinds[1:], "big")})

    async def run(self) -> int:
        from oba.server.tls import start_ldaps

        await self.ldap.start(self.config.server.address)
        stop_tls = await start_ldaps(self)
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conns.fileno(), self._receive)
        self.channel.send({"t": "ready", "pid": os.getpid()})
        reporter = asyncio.create_task(self._report())
        try:
            await self.stopping.wait()
        finally:
            reporter.cancel()
            loop.remove_reader(self.conns.fileno())
            self.conns.close()
            if stop_tls is not None:
                await stop_tls()
            await self.ldap.stop()
            self.store.close()
        return 0


async def _main(sock: socket.socket) -> int:
    loop = asyncio.get_running_loop()
    hello: asyncio.Future[Message] = loop.create_future()
    worker: Worker | None = None
    early: list[Message] = []  # what came after hello, before the worker was built

    def on_message(msg: Message) -> None:
        if worker is not None:
            worker.handle(msg)
        elif msg.get("t") == "hello" and not hello.done():
            hello.set_result(msg)
        else:
            early.append(msg)

    def on_close() -> None:
        if worker is not None:
            worker.stopping.set()
        elif not hello.done():
            hello.set_exception(ChannelClosed("the writer closed the channel"))

    _, channel = await loop.connect_accepted_socket(lambda: Channel(on_message, on_close), sock)
    msg = await asyncio.wait_for(hello, 60)
    from oba.app import setup_logging

    config = Config.model_validate(msg["config"])
    setup_logging(config)
    worker = Worker(channel, msg)
    loop.add_signal_handler(signal.SIGTERM, worker.stopping.set)
    for pending in early:  # an ACL switch or a stop sent while this process was starting
        worker.handle(pending)
    if channel.closed or worker.stopping.is_set():
        worker.store.close()
        return 0
    try:
        return await worker.run()
    finally:
        channel.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m oba.server.worker FD (started by the writer process)",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the writer, which stops us
    sock = socket.socket(fileno=int(argv[1]))
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    try:
        return asyncio.run(_main(sock))
    except Exception as exc:
        logging.getLogger("oba.workers").error("worker %d cannot run: %s", os.getpid(), exc)
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
