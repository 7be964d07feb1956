"""Failover time of a local 3-node cluster (default timeouts):

- SIGKILL the leader N times (``--kills``, default 20): kill -> new leader visible, and kill ->
  first write acknowledged through a survivor;
- SIGSTOP the leader N times (``--pauses``, default 20): a write sent through a follower right
  after the SIGSTOP (forwarded to the hung leader) -> answered; then SIGCONT.

Prints min/median/max of each. Usage: .venv/bin/python bench/failover.py [--kills 20]
[--pauses 20]. Reuses the process harness of tests/cluster/support.py (free ports, temp dir).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cluster.support import BASE, Cluster, add_person, person, rejoined, wait_for


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--pauses", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="oba-failover-") as tmp:
        c = Cluster(Path(tmp))
        try:
            c.start()
            c.wait_ready(30)
            elect, write = [], []
            for i in range(args.kills):
                lead = c.wait_leader(10)
                survivors = [nd for nd in c.nodes if nd is not lead]
                lead.kill()
                t0 = time.monotonic()
                c.wait_leader(10, among=survivors)
                elect.append(time.monotonic() - t0)
                add_person(survivors[0], f"kill{i}", timeout=5.0)
                write.append(time.monotonic() - t0)
                lead.start()
                # fully back (following a leader, LDAP answering) before the next kill:
                # killing the leader while the other survivor is still starting measures
                # start-up time, not failover
                wait_for(lambda lead=lead: rejoined(lead), 30, "rejoin")
            paused = []
            for i in range(args.pauses):
                lead = c.wait_leader(10)
                follower = next(nd for nd in c.nodes if nd is not lead)
                conn = follower.conn()
                lead.signal(signal.SIGSTOP)
                t0 = time.monotonic()
                try:
                    conn.add_s(f"uid=pause{i},{BASE}", person(f"pause{i}"))
                    paused.append(time.monotonic() - t0)
                finally:
                    lead.signal(signal.SIGCONT)
                    conn.unbind_s()
                wait_for(lambda lead=lead: rejoined(lead), 30, "the resumed node follows")
            for name, xs in (("new leader seen", elect), ("write acknowledged", write),
                             ("write, leader stopped", paused)):
                if not xs:
                    continue
                print(f"{name:>20}: n={len(xs)} min {min(xs) * 1000:.0f} ms  median "
                      f"{statistics.median(xs) * 1000:.0f} ms  max {max(xs) * 1000:.0f} ms")
        finally:
            c.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
