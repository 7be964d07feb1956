"""Failover time of a local 3-node cluster: SIGKILL the leader N times (default 20) and time
kill -> first write acknowledged through a survivor; prints min/median/max.

Usage: .venv/bin/python bench/failover.py [--kills 20]
Reuses the process harness of tests/cluster/support.py (free ports, temp directory).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cluster.support import Cluster, add_person, rejoined, wait_for


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kills", type=int, default=20)
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
            for name, xs in (("new leader seen", elect), ("write acknowledged", write)):
                print(f"{name:>20}: n={len(xs)} min {min(xs) * 1000:.0f} ms  median "
                      f"{statistics.median(xs) * 1000:.0f} ms  max {max(xs) * 1000:.0f} ms")
        finally:
            c.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
