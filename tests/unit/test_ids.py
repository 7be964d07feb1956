"""Command ids and entry UUIDs made on the write path: unique within a process and across a
fork (a forked child must not hand out ids its parent also hands out)."""

from __future__ import annotations

import os
import re

from oba import ids


def test_command_ids_are_unique_hex() -> None:
    made = [ids.command_id() for _ in range(5000)]
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"[0-9a-f]{32}", m) for m in made)


def test_a_forked_child_makes_other_ids() -> None:
    ids.new_uuid()  # the parent has a pool left over
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next ids and leave at once
        try:
            os.write(write, f"{ids.command_id()} {ids.new_uuid()} {ids.request_id()}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_cmd, child_uuid, child_req = pipe.read().split()
    os.waitpid(pid, 0)
    parent_cmd, parent_uuid = ids.command_id(), ids.new_uuid()
    assert child_cmd[:16] != parent_cmd[:16]  # a fresh prefix, not just the next count
    assert child_uuid != parent_uuid
    assert child_req.split("-")[0] != ids.request_id().split("-")[0]
