"""Files written straight from memory (store/directio.py), whole-chunk writes of the slab variables
(shardenc.put_chunk) and the store's CRC-32 helper."""

import errno
import os
import zlib

import numpy as np
import pytest
import zarr
from zarr.codecs import ZstdCodec

from massmap_xr.store import directio
from massmap_xr.store.layout import crc32_of
from massmap_xr.store.shardenc import chunk_spec, put_chunk

A = directio.ALIGN


def _parts(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]


def _o_direct_works(directory) -> bool:
    """Whether this file system accepts O_DIRECT (asked of the kernel directly)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    probe = os.path.join(directory, "probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | flag, 0o644)
    except OSError as e:
        assert e.errno == errno.EINVAL
        return False
    os.close(fd)
    os.unlink(probe)
    return True


@pytest.mark.parametrize("sizes", [[0], [17], [A], [A, A], [3 * A + 5], [100, A - 100, 7], [5 * A + 1, 0, 2 * A - 1]])
def test_write_file_holds_the_concatenated_parts(tmp_path, sizes):
    parts = _parts(sizes)
    path = tmp_path / "a" / "b" / "0.0"
    direct = directio.write_file(path, parts)
    assert path.read_bytes() == b"".join(parts)
    # O_DIRECT is used for the aligned bulk exactly where the file system takes it
    assert direct == (_o_direct_works(tmp_path) and sum(sizes) >= A)
    assert sorted(p.name for p in path.parent.iterdir()) == ["0.0"]


def test_refused_file_system_falls_back_to_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(directio, "_refused", {os.stat(tmp_path).st_dev})
    parts = _parts([3 * A + 11, 2 * A])
    assert directio.write_file(tmp_path / "x", parts) is False
    assert (tmp_path / "x").read_bytes() == b"".join(parts)


def test_failed_write_leaves_the_old_file_and_no_partial(tmp_path, monkeypatch):
    path = tmp_path / "shard"
    path.write_bytes(b"old contents")
    real = os.write
    calls = []

    def failing(fd, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data[:A]) if len(data) > A else real(fd, data)

    class Failing:  # the buffered path (file systems without O_DIRECT): half written, then full
        def __init__(self, *a):
            self.fh = open(*a)  # noqa: SIM115

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(bytes(data[:len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(directio.os, "write", failing)
    monkeypatch.setattr(directio, "open", Failing, raising=False)
    monkeypatch.setattr(directio, "_refused", set())
    with pytest.raises(OSError, match="No space"):
        directio.write_view(path, memoryview(directio.gather(_parts([4 * A + 3]))[0])[:4 * A + 3])
    monkeypatch.undo()
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["shard"]


def test_write_queue_writes_copies_waits_by_mark_and_raises_the_first_error(tmp_path):
    q = directio.WriteQueue(depth=2)
    src = np.arange(3 * A + 9, dtype=np.uint8)
    q.submit(tmp_path / "f0", [src[:A + 1], src[A + 1:]])
    src[:] = 0  # the queue holds its own copy of the bytes
    q.submit(tmp_path / "f1", _parts([7 * A + 5], seed=1))
    mark = q.submitted()
    assert mark == 2
    q.wait(mark)
    assert (tmp_path / "f0").read_bytes() == np.arange(3 * A + 9, dtype=np.uint8).tobytes()
    assert (tmp_path / "f1").read_bytes() == _parts([7 * A + 5], seed=1)[0]

    (tmp_path / "blocker").write_bytes(b"")  # a file where a folder is needed: that write fails
    q.submit(tmp_path / "blocker" / "f2", _parts([10]))
    for k in range(5):  # later writes still happen, buffers are reused
        q.submit(tmp_path / f"g{k}", _parts([A * (k + 1)], seed=k))
    with pytest.raises(OSError):
        q.wait()
    for k in range(5):
        assert (tmp_path / f"g{k}").read_bytes() == _parts([A * (k + 1)], seed=k)[0]
    q.close()
    assert not list(tmp_path.rglob("*.partial"))


def test_reserved_buffers_are_reused_best_fit_and_slots_come_back(tmp_path):
    import threading

    q = directio.WriteQueue(depth=2)
    small = q.reserve(100)
    q.release(small)
    big = q.reserve(10 * A)
    assert big is not small and big.size >= 10 * A and big.ctypes.data % A == 0
    big[:5] = np.frombuffer(b"hello", dtype=np.uint8)
    q.submit_buffer(tmp_path / "h", big, 5)
    q.wait()
    assert (tmp_path / "h").read_bytes() == b"hello"
    got = []
    t = threading.Thread(target=lambda: got.extend([q.reserve(50), q.reserve(20 * A)]), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "a released or written buffer did not give its slot back"
    assert got[0] is small and got[1] is not big  # the smallest buffer that fits; big does not fit
    q.release(got[0])
    q.release(got[1])
    q.close()


def test_write_queue_token_names_the_queue_only_inside_its_block(tmp_path):
    with directio.write_queue(depth=1) as token:
        q = directio.queue_of(token)
        assert isinstance(q, directio.WriteQueue)
        q.submit(tmp_path / "a", [b"x" * (A + 3)])
    assert (tmp_path / "a").read_bytes() == b"x" * (A + 3)  # written by the time the block ends
    assert directio.queue_of(token) is None and directio.queue_of(None) is None

    with pytest.raises(OSError), directio.write_queue() as token:  # an error of the writes is raised at exit
        (tmp_path / "f").write_bytes(b"")
        directio.queue_of(token).submit(tmp_path / "f" / "b", [b"y"])
    with pytest.raises(KeyError), directio.write_queue() as token:  # the block's own error wins
        directio.queue_of(token).submit(tmp_path / "f" / "c", [b"y"])
        raise KeyError("mine")


@pytest.mark.parametrize("dtype", ["float64", "int64", "int16", "bool"])
def test_put_chunk_writes_zarrs_bytes_for_whole_chunks_and_falls_back_at_the_edge(tmp_path, dtype):
    rng = np.random.default_rng(5)
    shape, chunks = (10, 6), (4, 3)
    x = (rng.random(shape) * 1000).astype(dtype)

    def make(name):
        return zarr.create_array(str(tmp_path / name), shape=shape, chunks=chunks, dtype=dtype,
                                 compressors=(ZstdCodec(level=3),), fill_value=0)

    ref, arr = make("ref.zarr"), make("new.zarr")
    ref[...] = x
    assert chunk_spec(arr) is not None
    with directio.write_queue() as token:
        for i in range(0, shape[0], chunks[0]):
            for j in range(0, shape[1], chunks[1]):
                put_chunk(arr, x[i:i + chunks[0], j:j + chunks[1]], (i, j),
                          directio.queue_of(token) if j else None)
    for i in range(2):  # the whole chunks are byte for byte zarr's own
        for j in range(2):
            key = ref.metadata.encode_chunk_key((i, j))
            assert (tmp_path / "new.zarr" / key).read_bytes() == (tmp_path / "ref.zarr" / key).read_bytes()
    assert np.array_equal(zarr.open_array(str(tmp_path / "new.zarr"), mode="r")[...], x)  # edge rows via zarr
    sharded = zarr.create_array(str(tmp_path / "sh.zarr"), shape=shape, chunks=(2, 3), shards=(4, 3), dtype=dtype)
    assert chunk_spec(sharded) is None


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "uint8", "bool", "<U3", "datetime64[s]"])
@pytest.mark.parametrize("n", [0, 1, 31, 4097, 100_003])
def test_crc32_of_is_zlibs_crc_of_the_c_order_bytes(dtype, n):
    rng = np.random.default_rng(n)
    a = (rng.random(n) * 1e6).astype(dtype) if dtype != "<U3" else np.array([str(v)[:3] for v in rng.integers(0, 999, n)], dtype=dtype)
    assert crc32_of(a) == zlib.crc32(a.tobytes())
    if n > 3:
        m = a[: n - n % 2].reshape(2, -1).T  # not contiguous
        assert crc32_of(m) == zlib.crc32(m.tobytes())


def test_fresh_build_records_slab_variable_crcs_without_reading_them_back(tmp_path, monkeypatch):
    import json

    from builders import table_prior_cube as make_cube

    import massmap_xr.store as st
    from massmap_xr.store import finalize as fin

    cube = make_cube(50, 6, chunks=8)[0]
    known = []
    real = fin.variable_crcs
    monkeypatch.setattr(fin, "variable_crcs", lambda group, k=None: known.append(dict(k or {})) or real(group, k))
    path = st.to_store(cube, tmp_path / "c.zarr", progress=False)
    per_pair = [n for n, v in cube.data_vars.items() if set(v.dims) == {"halo", "realization"}]
    assert per_pair and all(n in known[0] for n in per_pair)  # taken from the slabs, not read back
    group = zarr.open_group(str(path), mode="r")
    recorded = json.loads(group.attrs["massmap_variable_crc32"])
    for name in per_pair:
        assert recorded[name] == zlib.crc32(np.ascontiguousarray(group[name][...]).tobytes())
    assert st.verify_store(path).ok
