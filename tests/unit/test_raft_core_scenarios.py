"""Runs the readable Raft scenarios in ``raft_scenarios/*.txt`` (after etcd-io/raft testdata).

A scenario is a list of blocks: one command line, a ``----`` line, then the expected output
(possibly empty) up to a blank line. Lines starting with ``#`` are comments. Commands:

    nodes N [key=value ...]   new cluster of N nodes (CoreConfig fields, ints or true/false)
    elect ID                  tick ID alone until it leads
    tick ID [N] / tick-all [N]
    propose ID DATA           prints the index (or "dropped")
    stabilize                 deliver everything until quiet
    isolate ID / cut A B / heal
    crash ID / restart ID     restart reloads only what the node persisted
    compact ID                snapshot + compact at the applied index
    read-index ID CTX [forward]
    transfer ID TO
    status ID...              role, term, leader, commit, applied, last index per node
    log ID                    index@term:data of the node's durable log (after any snapshot)
    read-states ID            ReadStates the node produced so far, as index:ctx

``OBA_RAFT_SCENARIO_REWRITE=1`` rewrites the expected outputs from the actual ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from raftsim import Net

from oba.raft.core import RaftCore

DIR = Path(__file__).parent / "raft_scenarios"
FILES = sorted(DIR.glob("*.txt"))


def _status(core: RaftCore) -> str:
    return (f"{core.id}: {core.role.name.lower()} term={core.term} lead={core.lead} "
            f"commit={core.commit} applied={core.applied} last={core.last_index()}")


class Runner:
    def __init__(self) -> None:
        self.net = Net(1)

    def run(self, line: str) -> list[str]:
        cmd, *args = line.split()
        net = self.net
        num = [int(a) for a in args if a.lstrip("-").isdigit()]
        if cmd == "nodes":
            cfg: dict[str, object] = {}
            for kv in args[1:]:
                k, v = kv.split("=")
                cfg[k] = v == "true" if v in ("true", "false") else int(v)
            self.net = Net(int(args[0]), **cfg)
            return []
        if cmd == "elect":
            net.elect(num[0])
            return [_status(net.cores[num[0]])]
        if cmd == "tick":
            net.tick(num[0], num[1] if len(num) > 1 else 1)
            return []
        if cmd == "tick-all":
            net.tick_all(num[0] if num else 1)
            return []
        if cmd == "propose":
            idx = net.cores[num[0]].propose(args[1].encode())
            return [str(idx) if idx is not None else "dropped"]
        if cmd == "stabilize":
            net.stabilize()
            return []
        if cmd == "isolate":
            net.isolate(num[0])
            return []
        if cmd == "cut":
            net.cut(num[0], num[1])
            return []
        if cmd == "heal":
            net.heal()
            return []
        if cmd == "crash":
            del net.cores[num[0]]
            return []
        if cmd == "restart":
            net.start(num[0])
            return []
        if cmd == "compact":
            core = net.cores[num[0]]
            term = net.storage[core.id].compact(core.applied, (b"",) * core.applied, core.voters)
            core.compact(core.applied, term, core.voters)
            return [f"snapshot {core.applied}@{term}"]
        if cmd == "read-index":
            ok = net.cores[num[0]].read_index(args[1].encode(), forward="forward" in args)
            return ["ok" if ok else "refused"]
        if cmd == "transfer":
            return ["ok" if net.cores[num[0]].transfer_leadership(num[1]) else "refused"]
        if cmd == "status":
            return [_status(net.cores[i]) if i in net.cores else f"{i}: down" for i in num]
        if cmd == "log":
            st = net.storage[num[0]]
            head = f"snapshot {st.snapshot.index}@{st.snapshot.term} " if st.snapshot else ""
            body = " ".join(f"{e.index}@{e.term}:{e.data.decode() or '-'}" for e in st.entries)
            return [(head + body).strip() or "(empty)"]
        if cmd == "read-states":
            return [" ".join(f"{i}:{c.decode()}" for i, c in net.read_states[num[0]]) or "(none)"]
        raise ValueError(f"unknown command {cmd!r}")


def _blocks(text: str) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    k = 0
    while k < len(lines):
        line = lines[k].strip()
        k += 1
        if not line or line.startswith("#"):
            continue
        assert k < len(lines) and lines[k].strip() == "----", f"'----' expected after {line!r}"
        k += 1
        expected: list[str] = []
        while k < len(lines) and lines[k].strip():
            expected.append(lines[k].rstrip())
            k += 1
        out.append((line, expected))
    return out


def _render(text: str, actual: list[list[str]]) -> str:
    """The scenario text with each block's expectation replaced by ``actual``."""
    res: list[str] = []
    lines = text.splitlines()
    k = 0
    n = 0
    while k < len(lines):
        line = lines[k]
        k += 1
        if not line.strip() or line.strip().startswith("#"):
            res.append(line)
            continue
        res.extend([line, "----", *actual[n]])
        n += 1
        k += 1
        while k < len(lines) and lines[k].strip():
            k += 1
    return "\n".join(res) + "\n"


def test_scenarios_exist() -> None:
    assert len(FILES) >= 4


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario(path: Path) -> None:
    text = path.read_text()
    runner = Runner()
    actual: list[list[str]] = []
    failures: list[str] = []
    for line, expected in _blocks(text):
        got = runner.run(line)
        actual.append(got)
        if got != expected:
            failures.append(f"{line}\n  expected: {expected}\n  got:      {got}")
    if os.environ.get("OBA_RAFT_SCENARIO_REWRITE"):
        path.write_text(_render(text, actual))
        return
    assert not failures, f"{path.name}:\n" + "\n".join(failures)
