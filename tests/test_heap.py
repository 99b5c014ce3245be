"""The sweep driver's heap (sweep/heap.py): large blocks stay mapped apart once the threshold is fixed."""
import os
import subprocess
import sys

import pytest

# a process that frees an 8 MiB block (glibc then raises its mmap threshold to 8 MiB unless it is
# fixed) and prints whether a 1 MiB block made next is mapped apart (1) or taken from the heap (0)
CHILD = """
import sys
from tvae_sweep.sweep.heap import fix_mmap_threshold, malloc_info
fixed = fix_mmap_threshold() if sys.argv[1] == "fix" else False
big = bytearray(8 * 2**20)
del big
before = malloc_info()["hblks"]
block = bytearray(2**20)
print(int(fixed), malloc_info()["hblks"] - before)
"""


def mapped_apart(mode: str, **env) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True,
                         env={k: v for k, v in {**os.environ, **env}.items() if v is not None}).stdout
    fixed, mapped = out.split()
    return int(fixed), int(mapped)


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")


def test_a_fixed_threshold_keeps_large_blocks_mapped_apart_after_a_larger_one_was_freed():
    assert mapped_apart("fix", MALLOC_MMAP_THRESHOLD_=None) == (1, 1)


def test_glibcs_own_threshold_rises_and_a_users_setting_is_left_alone():
    assert mapped_apart("leave", MALLOC_MMAP_THRESHOLD_=None) == (0, 0)  # the block came from the heap
    assert mapped_apart("fix", MALLOC_MMAP_THRESHOLD_="16777216") == (0, 0)  # the user's 16 MiB stands
