"""Data crossing the boundary between the Raft core (pure state machine) and its runtime.

Rules for this module: plain dataclasses and enums only; everything here must be encodable as
msgpack via ``to_wire``/``from_wire`` (never pickle). The core (``core.py``) consumes
``Message``s and ticks and hands back a ``Ready``; the runtime (``node.py``) persists
``Ready.hard_state``/``Ready.entries``/``Ready.snapshot`` durably BEFORE sending
``Ready.messages``, applies ``Ready.committed`` in order, then calls ``core.advance(ready)``
(the etcd-io/raft contract).

The core API (``oba.raft.core.RaftCore``):

    RaftCore(config: CoreConfig, state: HardState, entries: list[Entry],
             snapshot: SnapshotMeta | None, rng: random.Random)
        # entries: the persisted log after the snapshot (index snapshot.index+1 ...)
    .tick() -> None                       # one logical clock tick
    .step(msg: Message) -> None           # a message from a peer (or a local MsgSnapStatus...)
    .propose(data: bytes) -> int | None   # leader: appends, returns the index; else None
    .read_index(ctx: bytes) -> bool       # leader: starts a ReadIndex round; False otherwise
    .transfer_leadership(to: int) -> bool
    .has_ready() -> bool
    .ready() -> Ready
    .advance(ready: Ready) -> None
    .compact(index: int, term: int, conf: tuple[int, ...]) -> None  # after a local snapshot
    .status() -> Status
    .apply_conf_change(cc: ConfChange) -> None   # called by the runtime when a committed
                                                 # EntryType.CONF_CHANGE entry is applied

Additions made while implementing the core (all optional / additive):

    RaftCore(..., applied: int | None = None)   # what the state machine already holds
                                                # (default: snapshot index); Ready.committed
                                                # then starts at applied + 1
    .read_index(ctx, forward: bool = False)     # forward=True on a follower that knows the
                                                # leader sends READ_INDEX; the ReadState comes
                                                # back in a later Ready of this node
    .propose_conf_change(cc) -> int | None      # leader; None if another is still unapplied
    .propose_many(datas: list[bytes]) -> list[int] | None  # leader: one batch, fewer messages
    encode_conf_change(cc) -> bytes / decode_conf_change(data) -> ConfChange

Order of work for one Ready: install ``snapshot`` (discard the whole log, load the data that
arrived with the SNAP), persist ``hard_state`` and ``entries``, fsync, send ``messages``, apply
``committed``, serve ``read_states``, then ``advance``. Do not call ``ready()`` again before
``advance``; ``step``/``tick`` in between are fine. When sending a SNAP message, stream the
snapshot named by ``msg.snapshot`` (``compact`` rewrites not-yet-handed-out SNAP messages to the
newest snapshot); report the outcome with a local SNAP_STATUS message (``frm`` = the follower,
``reject`` = failed). Voters at construction come from ``CoreConfig.voters``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3

    @property
    def label(self) -> str:
        # names used by /api/v1/cluster/status ("leader" | "follower" | "candidate")
        return {0: "follower", 1: "candidate", 2: "candidate", 3: "leader"}[int(self)]


class EntryType(IntEnum):
    NORMAL = 0  # data = an encoded Command (may be empty: the leader's no-op)
    CONF_CHANGE = 1  # data = an encoded ConfChange


class MsgType(IntEnum):
    APP = 1  # AppendEntries
    APP_RESP = 2
    VOTE = 3  # RequestVote
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAP = 9  # InstallSnapshot (metadata; the data travels out of band, see node.py)
    SNAP_STATUS = 10  # local: runtime reports a snapshot send finished/failed (reject=True)
    UNREACHABLE = 11  # local: runtime reports a peer could not be reached
    TIMEOUT_NOW = 12  # leadership transfer
    READ_INDEX = 13  # follower -> leader: please confirm a read index
    READ_INDEX_RESP = 14


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    term: int = 0
    vote: int = 0  # 0 = none
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    voters: tuple[int, ...]
    addrs: tuple[tuple[int, str], ...] = ()  # (id, raft addr) of every voter (membership)


@dataclass(frozen=True, slots=True)
class ConfChange:
    op: str  # "add" | "remove"
    node_id: int
    addr: str = ""


def encode_conf_change(cc: ConfChange) -> bytes:
    """The data of an EntryType.CONF_CHANGE entry (JSON: small, stable, no pickle)."""
    return json.dumps({"op": cc.op, "id": cc.node_id, "addr": cc.addr},
                      separators=(",", ":")).encode()


def decode_conf_change(data: bytes) -> ConfChange:
    """Inverse of ``encode_conf_change``; raises ValueError/KeyError/TypeError if malformed."""
    d = json.loads(data)
    op = str(d["op"])
    if op not in ("add", "remove"):
        raise ValueError(f"bad conf change op {op!r}")
    return ConfChange(op, int(d["id"]), str(d.get("addr", "")))


@dataclass(frozen=True, slots=True)
class Message:
    type: MsgType
    to: int
    frm: int
    term: int
    log_term: int = 0  # AppendEntries prevLogTerm / Vote lastLogTerm
    index: int = 0  # AppendEntries prevLogIndex / Vote lastLogIndex / resp: match or hint
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0  # on APP_RESP reject: follower's last index (or conflict index)
    snapshot: SnapshotMeta | None = None
    context: bytes = b""  # ReadIndex context / heartbeat context


@dataclass(frozen=True, slots=True)
class ReadState:
    index: int  # the commit index the read must wait for (lastApplied >= index)
    context: bytes


@dataclass(slots=True)
class Ready:
    hard_state: HardState | None = None  # persist if not None (changed since last Ready)
    entries: list[Entry] = field(default_factory=list)  # persist: truncate from entries[0].index
    snapshot: SnapshotMeta | None = None  # a snapshot received from the leader to install
    committed: list[Entry] = field(default_factory=list)  # apply in order
    messages: list[Message] = field(default_factory=list)  # send after persisting
    read_states: list[ReadState] = field(default_factory=list)
    role_changed: bool = False


@dataclass(frozen=True, slots=True)
class CoreConfig:
    node_id: int
    voters: tuple[int, ...]
    election_ticks: int = 10  # election timeout T in ticks; randomised in [T, 2T)
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_entries_per_msg: int = 256
    max_inflight: int = 256


@dataclass(frozen=True, slots=True)
class Status:
    node_id: int
    role: Role
    term: int
    leader: int  # 0 = unknown
    commit: int
    applied: int
    last_index: int
    voters: tuple[int, ...]
    progress: dict[int, tuple[int, int]]  # leader only: peer -> (match, next)


def to_wire(msg: Message) -> dict[str, Any]:
    """A msgpack-ready dict for a Message (short keys; the transport frames it)."""
    d: dict[str, Any] = {"t": int(msg.type), "to": msg.to, "f": msg.frm, "T": msg.term}
    if msg.log_term:
        d["lt"] = msg.log_term
    if msg.index:
        d["i"] = msg.index
    if msg.entries:
        d["e"] = [[e.index, e.term, int(e.type), e.data] for e in msg.entries]
    if msg.commit:
        d["c"] = msg.commit
    if msg.reject:
        d["r"] = True
    if msg.reject_hint:
        d["h"] = msg.reject_hint
    if msg.snapshot is not None:
        s = msg.snapshot
        d["s"] = [s.index, s.term, list(s.voters)]
        if s.addrs:
            d["s"].append([[i, a] for i, a in s.addrs])
    if msg.context:
        d["x"] = msg.context
    return d


def from_wire(d: dict[str, Any]) -> Message:
    """Inverse of ``to_wire``; raises ValueError/KeyError/TypeError on malformed input."""
    entries = tuple(
        Entry(int(i), int(t), EntryType(int(ty)), bytes(data)) for i, t, ty, data in d.get("e", ())
    )
    snap = d.get("s")
    return Message(
        type=MsgType(int(d["t"])),
        to=int(d["to"]),
        frm=int(d["f"]),
        term=int(d["T"]),
        log_term=int(d.get("lt", 0)),
        index=int(d.get("i", 0)),
        entries=entries,
        commit=int(d.get("c", 0)),
        reject=bool(d.get("r", False)),
        reject_hint=int(d.get("h", 0)),
        snapshot=None if snap is None else SnapshotMeta(
            int(snap[0]), int(snap[1]), tuple(int(v) for v in snap[2]),
            tuple((int(i), str(a)) for i, a in (snap[3] if len(snap) > 3 else ()))),
        context=bytes(d.get("x", b"")),
    )
