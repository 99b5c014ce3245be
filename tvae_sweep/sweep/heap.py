"""The sweep driver's heap: large blocks mapped and returned whole, so a long sweep does not grow.

glibc's malloc serves a block above its mmap threshold (128 KiB) from a mapping of its own, returned
to the system when freed; but each time such a block is freed it raises the threshold to that size
(up to 32 MiB). Tune's driver allocates ever larger transient blocks as a sweep goes on (the
experiment state of every trial it saves, the trials' table after each one ends), so after the first
ones they come from the heap and leave it fragmented: free, but held. Measured on a sweep of 400
one-epoch trials (benchmarks/RESULTS.md, bench_sweep_scale): the driver's RSS grew 0.65 MB per trial,
0.26 MB of it free memory in malloc's arenas; with the threshold fixed at 128 KiB, 0.3 MB per trial.
"""
from __future__ import annotations

import ctypes
import os

M_MMAP_THRESHOLD = -3  # mallopt's parameter, from glibc's malloc.h
THRESHOLD = 128 * 1024  # glibc's default, kept fixed
ENV = "MALLOC_MMAP_THRESHOLD_"  # glibc's own setting: a user's choice is left alone


def fix_mmap_threshold() -> bool:
    """Fixes glibc's mmap threshold at 128 KiB for this process (no effect elsewhere than on glibc,
    nor where $MALLOC_MMAP_THRESHOLD_ sets it); True if it was fixed."""
    if ENV in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD))


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def malloc_info() -> dict[str, int]:
    """glibc's mallinfo2 over all arenas, in bytes and blocks: uordblks in use, fordblks free but held
    in the arenas, hblks and hblkhd the blocks mapped apart and their bytes (empty elsewhere)."""
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return {}
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    return {name: getattr(info, name) for name, _ in _Mallinfo2._fields_}
