"""The process's memory: its resident size, and glibc's malloc kept from hoarding what a
long-running server's requests free."""

from __future__ import annotations

import resource
from pathlib import Path


def rss_mb() -> float:
    """Resident memory of this process now (MB), from /proc; peak RSS where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _glibc():
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return None


_LIBC = _glibc()
M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each new thread that allocates its own malloc arena (up to 8 per core), each
    keeping the memory its requests freed; Gradio runs requests on a pool of up to 40 threads, so
    resident memory climbed request after request as more threads took a turn. A few arenas
    serve the requests analysed at once just as well. Must run before the worker threads start."""
    if _LIBC is not None:
        _LIBC.mallopt(M_ARENA_MAX, max(arenas, 1))


def release_memory() -> None:
    """Hand the memory a request freed back to the system (a request's transient arrays are tens
    of MB; without this they stay mapped, fragmented, in the process)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
