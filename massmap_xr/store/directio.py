"""Whole files written to local disk straight from memory (``O_DIRECT``), atomically.

A buffered ``write`` copies every byte into the page cache and, once the cache holds more dirty
data than the kernel allows, makes the writer wait for the disk: on the reference machine that
costs about 1.5 CPU-seconds per GB in the kernel, more than Blosc spends compressing the same
bytes.  :func:`write_file` instead writes the 4096-byte-aligned bulk of a file with ``O_DIRECT``
(the disk reads it from the caller's buffer; no copy, no page cache) and the short tail with an
ordinary write, into a temporary file in the same directory that is then renamed over the
target, as zarr's ``LocalStore`` does: a reader sees either the old object or the whole new one.

Where ``O_DIRECT`` is not available (not Linux, or a file system such as tmpfs that refuses
it) the same bytes are written with an ordinary buffered write; the file is the same either way.
The buffer is one per thread, reused from call to call (no fresh pages to fault in and zero).
A :class:`WriteQueue` does the writes on a background thread, so that the disk works while the
slabs' threads compute and compress the next ones.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no O_DIRECT either
    fcntl = None

#: alignment of the buffer address, the file offsets and the lengths written with O_DIRECT
ALIGN = 4096

_local = threading.local()
_refused: set[int] = set()  # st_dev of file systems that refused O_DIRECT


def _aligned(nbytes: int) -> np.ndarray:
    """A fresh uint8 buffer of ``nbytes`` (plus one block of slack) whose address is a multiple of :data:`ALIGN`."""
    raw = np.empty(nbytes + 2 * ALIGN, dtype=np.uint8)
    off = (-raw.ctypes.data) % ALIGN
    return raw[off:off + nbytes + ALIGN]


def aligned_buffer(nbytes: int) -> np.ndarray:
    """This thread's reusable uint8 buffer of at least ``nbytes``, its address a multiple of :data:`ALIGN`."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size < nbytes:
        buf = _local.buf = _aligned(nbytes)
    return buf


def _sizes(parts) -> list[int]:
    return [memoryview(p).nbytes for p in parts]


def gather(parts, buf: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Copy the bytes-like ``parts`` one after the other into ``buf`` (default: this thread's
    :func:`aligned_buffer`): (buffer, length)."""
    sizes = _sizes(parts)
    n = sum(sizes)
    buf = aligned_buffer(n) if buf is None else buf
    pos = 0
    for p, s in zip(parts, sizes, strict=True):
        buf[pos:pos + s] = np.frombuffer(p, dtype=np.uint8)
        pos += s
    return buf, n


def write_file(path, parts) -> bool:
    """Write the concatenation of ``parts`` as the file ``path`` (parents created), atomically.

    Returns True when the bulk went to disk with ``O_DIRECT``, False when the file was written
    through the page cache (O_DIRECT unavailable there).  On any error the temporary file is
    removed and ``path`` is left as it was.
    """
    buf, n = gather(parts)
    return write_view(path, memoryview(buf)[:n])


def write_view(path, view: memoryview) -> bool:
    """:func:`write_file` of bytes already in one buffer (O_DIRECT needs its address aligned to :data:`ALIGN`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        direct = _write_new(tmp, view)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return direct


class WriteQueue:
    """Files written by one background thread while the submitting threads compute the next slab.

    At most ``depth`` files are being filled, queued or written at once (each in its own aligned
    buffer, reused afterwards); :meth:`reserve` and :meth:`submit` wait for a free slot, which
    bounds the memory held.
    :meth:`wait` blocks until every submitted file is on disk and raises the first write error.
    """

    def __init__(self, depth: int = 2):
        from concurrent.futures import ThreadPoolExecutor

        self._depth = max(1, int(depth))
        self._slots = threading.BoundedSemaphore(self._depth)
        self._lock = threading.Lock()
        self._free: list[np.ndarray] = []
        self._futures: list = []
        self._done = 0  # futures waited for and dropped
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="massmap-write")

    def reserve(self, nbytes: int) -> np.ndarray:
        """An aligned buffer of at least ``nbytes`` to fill and hand to :meth:`submit_buffer` (or
        give back with :meth:`release`); waits for a free slot first."""
        self._slots.acquire()
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.size >= nbytes]
            k = min(fits, key=lambda i: self._free[i].size) if fits else None
            buf = None if k is None else self._free.pop(k)
        return _aligned(nbytes) if buf is None else buf

    def release(self, buf: np.ndarray) -> None:
        """Give back a buffer of :meth:`reserve` that will not be written."""
        with self._lock:
            self._free.append(buf)
            if len(self._free) > self._depth:
                self._free.pop(min(range(len(self._free)), key=lambda i: self._free[i].size))
        self._slots.release()

    def submit_buffer(self, path, buf: np.ndarray, n: int) -> None:
        """Write the first ``n`` bytes of ``buf`` (from :meth:`reserve`) as the file ``path``."""
        try:
            fut = self._executor.submit(self._write, path, buf, n)
        except BaseException:
            self.release(buf)
            raise
        with self._lock:
            self._futures.append(fut)

    def submit(self, path, parts) -> None:
        """Write the concatenated bytes-like ``parts`` as the file ``path`` (copied first)."""
        buf = self.reserve(sum(_sizes(parts)))
        try:
            buf, n = gather(parts, buf)
        except BaseException:
            self.release(buf)
            raise
        self.submit_buffer(path, buf, n)

    def submitted(self) -> int:
        """How many files have been submitted so far (a mark for :meth:`wait`)."""
        with self._lock:
            return self._done + len(self._futures)

    def _write(self, path, buf: np.ndarray, n: int) -> None:
        try:
            write_view(path, memoryview(buf)[:n])
        finally:
            self.release(buf)

    def wait(self, upto: int | None = None) -> None:
        """Wait for every submitted write (the first ``upto`` submitted, with a mark from
        :meth:`submitted`); raise the first error among them (after all of them have ended)."""
        with self._lock:
            k = len(self._futures) if upto is None else max(0, min(len(self._futures), upto - self._done))
            futures, self._futures = self._futures[:k], self._futures[k:]
            self._done += k
        error = None
        for f in futures:
            exc = f.exception()
            if exc is not None and error is None:
                error = exc
        if error is not None:
            raise error

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._executor.shutdown(wait=True)
            self._free.clear()


_QUEUES: dict[str, WriteQueue] = {}


@contextmanager
def write_queue(depth: int = 2):
    """A :class:`WriteQueue` registered under a fresh token (yielded) for :func:`queue_of`.

    Tasks that run in this process find the queue by its token; in another process (a
    ``dask.distributed`` worker) the token names nothing and they write synchronously.  On exit
    every queued write has ended; a write error is raised unless the block already raises.
    """
    token = uuid.uuid4().hex
    q = _QUEUES[token] = WriteQueue(depth)
    try:
        yield token
    except BaseException:
        _QUEUES.pop(token, None)
        with contextlib.suppress(Exception):
            q.close()
        raise
    _QUEUES.pop(token, None)
    q.close()


def queue_of(token: str | None) -> WriteQueue | None:
    """The :class:`WriteQueue` of ``token`` in this process, or None."""
    return None if token is None else _QUEUES.get(token)


def _write_new(tmp: Path, view: memoryview) -> bool:
    """Create ``tmp`` holding ``view``; O_DIRECT for the aligned bulk where the file system allows it."""
    flag = getattr(os, "O_DIRECT", 0) if fcntl is not None else 0
    dev = _device(tmp.parent)
    bulk = (len(view) // ALIGN) * ALIGN if flag and dev not in _refused else 0
    if bulk:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | flag, 0o644)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            _refused.add(dev)
            bulk = 0
    if not bulk:
        with open(tmp, "xb") as fh:
            fh.write(view)
        return False
    try:
        pos = 0
        while pos < bulk:
            pos += os.write(fd, view[pos:bulk])
            if pos % ALIGN:  # a short, unaligned write: finish through the page cache
                break
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~flag)
        while pos < len(view):
            pos += os.write(fd, view[pos:])
    finally:
        os.close(fd)
    return True


def _device(directory: Path) -> int:
    try:
        return os.stat(directory).st_dev
    except OSError:
        return -1
