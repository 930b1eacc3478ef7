"""distlock-bench's Python peers, speaking the bench's peer protocol
(crates/distlock-bench/src/peers.rs):

    net_peers.py --lib LIB --url URL cycle --name N --warmup W --iterations I
    net_peers.py --lib LIB --url URL contend --name N --hold-us H --duration-ms MS

LIB is one of filelock, portalocker, redis-py, python-redis-lock, kazoo, etcd3, pals,
sqlalchemy-dlock. URL is the distlock URL of the lock's home (file:///dir, redis://,
postgres://, mysql://, zk://host:port/, etcd://host:port/). Every lock waits without bound, each
library its own way: filelock, redis-py and etcd3 poll or retry, portalocker blocks in flock,
python-redis-lock waits on a BLPOP signal, kazoo on a watch, the SQL ones in the server.
"""

import argparse
import json
import os
import sys
import time
import uuid
from importlib.metadata import version
from urllib.parse import unquote, urlsplit

DIST = {
    "filelock": "filelock",
    "portalocker": "portalocker",
    "redis-py": "redis",
    "python-redis-lock": "python-redis-lock",
    "kazoo": "kazoo",
    "etcd3": "etcd3",
    "pals": "pals",
    "sqlalchemy-dlock": "sqlalchemy-dlock",
    "pymysqllock": "PyMySQLLock",
}


def hosts(url):
    """The URL's host:port list (several for a ZooKeeper ensemble or an etcd cluster)."""
    return urlsplit(url).netloc.rsplit("@", 1)[-1]


def host_port(url):
    """The first host and port of the URL."""
    host, port = hosts(url).split(",")[0].rsplit(":", 1)
    return host, int(port)


def sql_url(url):
    """A SQLAlchemy URL with a driver for a distlock postgres:// or mysql:// URL."""
    scheme, rest = url.split("://", 1)
    driver = {
        "postgres": "postgresql+psycopg2",
        "postgresql": "postgresql+psycopg2",
        "mysql": "mysql+pymysql",
        "mariadb": "mysql+pymysql",
    }[scheme]
    return f"{driver}://{rest}"


def make_lock(lib, url, name):
    """(acquire, release) of the lock `name`, waiting without bound."""
    if lib in ("filelock", "portalocker"):
        path = os.path.join(urlsplit(url).path, name)
        if lib == "filelock":
            import filelock

            lock = filelock.FileLock(path, timeout=-1)
            return lock.acquire, lock.release
        import portalocker

        # Without LOCK_NB, portalocker's flock blocks in the kernel instead of polling.
        lock = portalocker.Lock(path, timeout=None, flags=portalocker.LockFlags.EXCLUSIVE)
        return lock.acquire, lock.release
    if lib == "redis-py":
        import redis

        lock = redis.Redis.from_url(url).lock(name, timeout=30, blocking=True)
        return (lambda: lock.acquire(blocking_timeout=None)), lock.release
    if lib == "python-redis-lock":
        import redis
        import redis_lock

        conn = redis.Redis.from_url(url)
        lock = redis_lock.Lock(conn, name, expire=30)
        return (lambda: lock.acquire(blocking=True)), lock.release
    if lib == "kazoo":
        from kazoo.client import KazooClient

        client = KazooClient(hosts=hosts(url))
        client.start()
        lock = client.Lock(f"/kazoo-bench/{name}", uuid.uuid4().hex)
        return (lambda: lock.acquire(blocking=True)), lock.release
    if lib == "etcd3":
        import etcd3

        host, port = host_port(url)
        lock = etcd3.client(host=host, port=port).lock(name, ttl=30)

        def acquire():
            # Its wait starts a watch (with no start revision) after the failed attempt, so a
            # release in between is missed; with timeout=None it then waits for good once the
            # other contenders stop. A 1 s bound in a loop is what a user would do.
            while not lock.acquire(timeout=1):
                pass

        return acquire, lock.release
    if lib == "pals":
        import pals

        # acquire_timeout is in ms; a day is "forever" for the benchmark.
        locker = pals.Locker("distlock-bench", sql_url(url), acquire_timeout_default=86_400_000)
        lock = locker.lock(name)
        return (lambda: lock.acquire(blocking=True)), lock.release
    if lib == "sqlalchemy-dlock":
        from sqlalchemy import create_engine
        from sqlalchemy_dlock import create_sadlock

        conn = create_engine(sql_url(url)).connect()
        lock = create_sadlock(conn, name)
        # Without a timeout it waits in the server on PostgreSQL; on MySQL it sends
        # GET_LOCK(name, -1), which MariaDB answers with NULL (an error), so a day it is.
        timeout = 86_400 if url.startswith(("mysql", "mariadb")) else None
        return (lambda: lock.acquire(block=True, timeout=timeout)), lock.release
    if lib == "pymysqllock":
        from PyMySQLLock import Locker

        parts = urlsplit(url)
        locker = Locker(
            host=parts.hostname,
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=parts.path.lstrip("/") or None,
        )
        lock = locker.lock(name)

        def acquire():
            # It opens a connection per acquire and waits in GET_LOCK; its default timeout,
            # -1, is answered with NULL by MariaDB (not "wait forever"), so a day it is.
            while not lock.acquire(timeout=86_400):
                pass

        return acquire, lock.release
    raise SystemExit(f"unknown lib {lib!r}")


def cycle(args):
    acquire, release = make_lock(args.lib, args.url, args.name)
    for _ in range(args.warmup):
        acquire()
        release()
    clock = time.monotonic_ns
    samples = []
    for _ in range(args.iterations):
        started = clock()
        acquire()
        release()
        samples.append(clock() - started)
    return {"samples": samples}


def contend(args):
    acquire, release = make_lock(args.lib, args.url, args.name)
    acquire()
    release()
    print("ready", flush=True)
    sys.stdin.readline()
    clock = time.monotonic_ns
    hold = args.hold_us / 1e6
    stop = clock() + args.duration_ms * 1_000_000
    events = []
    while clock() < stop:
        requested = clock()
        acquire()
        granted = clock()
        if hold:
            time.sleep(hold)
        releasing = clock()
        release()
        events.append([requested, granted, releasing, clock()])
    return {"events": events}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", required=True, choices=sorted(DIST))
    parser.add_argument("--url", required=True)
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("cycle")
    c.add_argument("--name", required=True)
    c.add_argument("--warmup", type=int, required=True)
    c.add_argument("--iterations", type=int, required=True)
    k = sub.add_parser("contend")
    k.add_argument("--name", required=True)
    k.add_argument("--hold-us", type=int, required=True)
    k.add_argument("--duration-ms", type=int, required=True)
    args = parser.parse_args()
    output = cycle(args) if args.mode == "cycle" else contend(args)
    output.update({"lib": args.lib, "version": version(DIST[args.lib])})
    json.dump(output, sys.stdout)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
