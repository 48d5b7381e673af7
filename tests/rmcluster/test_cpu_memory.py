"""The CPU malloc setting: a freed multi-MiB block stays in glibc's heap (glibc's own accounting, mallinfo2),
where by default it goes back to the OS; applied by loading a model on CPU unless the config turns it off.
Each case runs in a fresh interpreter, since the setting is process-wide."""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")

# Frees a 20 MiB block and prints how many free bytes glibc's heap then holds.
_PROBE = """
import ctypes, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.mallinfo2.restype = [ctypes.c_void_p], MallInfo2
{setup}
block = libc.malloc(20 << 20)
ctypes.memset(block, 1, 20 << 20)
libc.free(block)
print(libc.mallinfo2().fordblks)
"""

_LOAD = """
from rmcluster.config import RMConfig
from rmcluster.model_loading import load_model
load_model(RMConfig(model={{"name": {path!r}, "device": "cpu", "cpu_keep_freed_memory": {keep}}}).model)
"""


def _free_heap_bytes(setup: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE.format(setup=setup)], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split()[-1])


def test_default_glibc_returns_the_block():
    assert _free_heap_bytes("") < 20 << 20


def test_keep_freed_memory_keeps_the_block():
    setup = "from rmcluster.cpu_memory import keep_freed_memory\nassert keep_freed_memory()"
    assert _free_heap_bytes(setup) >= 20 << 20


@pytest.mark.parametrize("keep", [True, False])
def test_cpu_model_load_applies_the_config(demo_dir, keep):
    kept = _free_heap_bytes(_LOAD.format(path=str(demo_dir), keep=keep)) >= 20 << 20
    assert kept is keep
