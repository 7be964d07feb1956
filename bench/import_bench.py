"""Bulk-load benchmark: ``slapadd -q`` (OpenLDAP back-mdb) vs ``oba import`` on the same LDIF.

Rules: generates the standard data set (bench/datagen.py, default 100,000 users), loads it
into a private slapd mdb database (same index set as Oba's defaults) and into an empty Oba
data directory, each timed end to end as a subprocess (wall and CPU time of the child), and
prints both plus the ratio. With ``--repeat N`` each tool runs N times into fresh directories
and the best run counts (the machine is shared: the best run is the least disturbed one).
Everything lives in a temporary directory that is removed at the end.

CLI: ``python bench/import_bench.py [--users N] [--groups G] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import datagen

REPO = Path(__file__).resolve().parents[1]
SLAPADD = "/usr/sbin/slapadd"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
INDEXES = ("objectClass eq", "uid eq,pres", "cn,sn,givenName,mail eq,sub",
           "member,uniqueMember,memberUid eq", "entryUUID eq", "uidNumber,gidNumber eq")


def slapd_conf(db: Path) -> str:
    lines = [f"include /etc/ldap/schema/{s}.schema" for s in SCHEMAS]
    lines += ["modulepath /usr/lib/ldap", "moduleload back_mdb", "database mdb",
              f'suffix "{datagen.BASE_DN}"', f'rootdn "{datagen.ROOT_DN}"', f"directory {db}",
              "maxsize 8589934592"]
    lines += [f"index {i}" for i in INDEXES]
    return "\n".join(lines) + "\n"


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run of ``cmd``."""
    before = os.times()
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.monotonic() - started
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system
                                                          - before.children_system)
    return seconds, cpu


def best(runs: int, make_cmd: Callable[[int], list[str]]) -> tuple[float, float]:
    return min(timed(make_cmd(i)) for i in range(runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="oba-import-bench-"))
    try:
        ldif = work / "data.ldif"
        count = datagen.write_ldif(str(ldif), args.users, args.groups)

        def slapadd(i: int) -> list[str]:
            db = work / f"slapd-db{i}"
            db.mkdir()
            conf = work / f"slapd{i}.conf"
            conf.write_text(slapd_conf(db))
            return [SLAPADD, "-q", "-f", str(conf), "-l", str(ldif)]

        def oba_import(i: int) -> list[str]:
            return [sys.executable, "-m", "oba", "import", str(ldif), "--data-dir",
                    str(work / f"oba-data{i}")]

        slap, slap_cpu = best(args.repeat, slapadd)
        oba, oba_cpu = best(args.repeat, oba_import)
        print(f"entries:      {count}")
        print(f"slapadd -q:   {slap:7.2f} s  ({count / slap:8.0f} entries/s, cpu {slap_cpu:.2f} s)")
        print(f"oba import:   {oba:7.2f} s  ({count / oba:8.0f} entries/s, cpu {oba_cpu:.2f} s)")
        print(f"ratio:        {oba / slap:7.2f}x  (target <= 1.5x; cpu {oba_cpu / slap_cpu:.2f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
