"""distlock-bench's Python file-lock peers, filelock and portalocker, doing one uncontended
acquire + release per iteration next to the same raw OFD cycle as the Rust floor, interleaved
in batches: `peers.py --dir D --warmup W --iterations I --batch B`. Prints one JSON object with
every sample in nanoseconds, timed with time.perf_counter_ns() around each iteration. (Their
contention runs go through net_peers.py, the peer protocol's script.)
"""

import argparse
import fcntl
import json
import os
import platform
import struct
import sys
import time
from importlib.metadata import version

import filelock
import portalocker

# struct flock on 64-bit Linux: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid, padded to 32 bytes.
WRLCK = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
UNLCK = struct.pack("hhqqi4x", fcntl.F_UNLCK, os.SEEK_SET, 0, 0, 0)


def raw_ofd(path):
    """os.open + fcntl(F_OFD_SETLK) + unlock + os.close: the Rust floor's cycle in Python."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC

    def cycle():
        fd = os.open(path, flags, 0o600)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, WRLCK)
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, UNLCK)
        finally:
            os.close(fd)

    return cycle


def with_filelock(path):
    lock = filelock.FileLock(path)

    def cycle():
        lock.acquire(timeout=0)
        lock.release()

    return cycle


def with_portalocker(path):
    lock = portalocker.Lock(path, timeout=0, fail_when_locked=True)

    def cycle():
        lock.acquire()
        lock.release()

    return cycle


def batch(cycle, n, out):
    clock = time.perf_counter_ns
    for _ in range(n):
        started = clock()
        cycle()
        out.append(clock() - started)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    args = parser.parse_args()

    subjects = {
        "raw_ofd": raw_ofd(os.path.join(args.dir, "py-floor.lock")),
        "filelock": with_filelock(os.path.join(args.dir, "filelock.lock")),
        "portalocker": with_portalocker(os.path.join(args.dir, "portalocker.lock")),
    }
    names = list(subjects)
    for name in names:
        batch(subjects[name], args.warmup, [])
    samples = {name: [] for name in names}
    done, round_ = 0, 0
    while done < args.iterations:
        n = min(args.batch, args.iterations - done)
        for offset in range(len(names)):
            name = names[(round_ + offset) % len(names)]
            batch(subjects[name], n, samples[name])
        done += n
        round_ += 1

    json.dump(
        {
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "versions": {"filelock": version("filelock"), "portalocker": version("portalocker")},
            "samples": samples,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
