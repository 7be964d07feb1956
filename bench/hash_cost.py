"""What one password hash costs on this machine, per ``security.argon2`` setting.

Usage: .venv/bin/python bench/hash_cost.py [--repeat 20] [--params 3,4096,1 2,19456,1 ...]

Rules: each setting is timed with ``oba.directory.password`` itself (argon2-cffi, Argon2id, the
code every Oba bind runs), ``--repeat`` verifications of one hash, one after the other, the
median kept; the CPU time (``time.process_time``: a hash with p > 1 lanes runs them in threads)
is what a bind costs the server whatever else runs on the machine (the wall time, printed too,
is not). When Debian's libargon2 (what OpenLDAP's
``argon2.so`` links) is installed, OpenLDAP's default (Argon2i, t=3, m=4096 KiB, p=1) is timed
through it as well. Binds per second per core = 1000 / CPU ms; the memory column is what each
hash running at once holds. Bounded: at most ``--repeat`` hashes per setting.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from oba.directory import password as pw  # noqa: E402

DEFAULT_PARAMS = ("3,4096,1", "2,4096,1", "3,8192,1", "3,12288,1", "2,19456,1", "3,65536,4")


def cpu_ms(fn: object, repeat: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per call of ``fn``, the median of ``repeat`` calls."""
    assert callable(fn)
    fn()  # warm: first allocation of the memory
    cpu, wall = [], []
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    cpu.sort()
    wall.sort()
    return cpu[len(cpu) // 2], wall[len(wall) // 2]


def libargon2() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("argon2")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.argon2i_hash_encoded.argtypes = [
        ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t,
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    return lib


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--params", nargs="*", default=list(DEFAULT_PARAMS),
                    help="iterations,memoryKiB,parallelism settings to time")
    args = ap.parse_args(argv)
    rows = []
    for spec in args.params:
        t, m, p = (int(x) for x in spec.split(","))
        params = pw.Argon2Params(t, m, p)
        stored = pw.hash_password(b"password1", "ARGON2", argon2_params=params)
        cpu, wall = cpu_ms(lambda stored=stored: pw.verify(b"password1", stored), args.repeat)
        rows.append((f"Oba (argon2-cffi) argon2id t={t} m={m} p={p}", m, cpu, wall))
    lib = libargon2()
    if lib is not None:
        out = ctypes.create_string_buffer(256)
        salt = b"0123456789abcdef"

        def slapd_default() -> None:
            lib.argon2i_hash_encoded(3, 4096, 1, b"password1", 9, salt, 16, 32, out, 256)

        cpu, wall = cpu_ms(slapd_default, args.repeat)
        rows.append(("slapd argon2.so (libargon2) argon2i t=3 m=4096 p=1", 4096, cpu, wall))
    width = max(len(r[0]) for r in rows)
    print(f"{'setting':<{width}}  {'memory':>9}  {'CPU ms':>7}  {'wall ms':>7}  "
          f"{'binds/s/core':>12}")
    for name, m, cpu, wall in rows:
        print(f"{name:<{width}}  {m / 1024:>6.1f} MiB  {cpu:>7.2f}  {wall:>7.2f}  "
              f"{1000 / cpu if cpu else float('nan'):>12.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
