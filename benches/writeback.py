#!/usr/bin/env python3
"""The I/O pattern of a directory target's commit, on the filesystem of DIR: a generation's
four files (the sizes of an RSA credential's cert.pem, key.pem, bundle.pem and
credentials.json) and their directory made durable, two ways, N times each, in turn:

- one by one: write a file, fsync it, then the next (certrot before);
- started together: write every file and start its writeback (sync_file_range with
  SYNC_FILE_RANGE_WRITE), then fsync each in the same order (certrot's commit now).

Both make the same fsync calls in the same order; the second lets the disk work on all four
at once. Prints min / median / max in milliseconds and the ratio of the medians.

    benches/writeback.py [DIR=.] [N=100]
"""
import ctypes
import os
import statistics
import sys
import tempfile
import time

SYNC_FILE_RANGE_WRITE = 2
FILES = (("cert.pem", 1200), ("key.pem", 1700), ("bundle.pem", 3000), ("credentials.json", 4200))
libc = ctypes.CDLL(None, use_errno=True)
libc.sync_file_range.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)


def generation(d, together):
    os.mkdir(d, 0o700)
    fds = []
    for name, size in FILES:
        fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(size))
        if together:
            libc.sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)
        else:
            os.fsync(fd)
        fds.append(fd)
    for fd in fds:
        if together:
            os.fsync(fd)
        os.close(fd)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)


def main():
    where = sys.argv[1] if len(sys.argv) > 1 else "."
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    times = {False: [], True: []}
    with tempfile.TemporaryDirectory(dir=where) as root:
        for i in range(n):
            for together in (False, True):
                t = time.perf_counter()
                generation(os.path.join(root, f"g{i}-{int(together)}"), together)
                times[together].append((time.perf_counter() - t) * 1e3)
    for together, label in ((False, "one by one"), (True, "started together")):
        v = sorted(times[together])
        print(f"{label:17} {v[0]:7.3f} {statistics.median(v):7.3f} {v[-1]:7.3f} ms")
    print(f"ratio of the medians: {statistics.median(times[True]) / statistics.median(times[False]):.2f}")


if __name__ == "__main__":
    main()
