"""The Celery side of `bench/run.sh fleet` (bench/fleet_bench.cpp drives it).

The same work as shoal's exec job: one task per record runs `/bin/sh -c <command>` with the
record's payload on stdin, in a prefork pool of N processes, with late acknowledgement (the
broker keeps a task until it has run) and a prefetch of 1: Celery's settings for tasks that
must not be lost when a worker dies. Debian's python3-celery 5.2 and python3-redis, a Redis 7
broker (redis-server) started by the driver on a loopback port.

    python3 fleet_celery.py enqueue N      sends N tasks (ids r0..r{N-1}, ~50-byte payloads)
    python3 -m celery -A fleet_celery worker -Q fleet -c 4 --prefetch-multiplier 1 ...

Each task increments the Redis counter `fleet:done` after its command exited 0 (the driver polls
it). Environment: FLEET_BENCH_REDIS_SOCKET (the Redis server's unix socket), FLEET_BENCH_COMMAND
(default "true").
"""

import os
import subprocess
import sys

from celery import Celery
import redis

SOCKET = os.environ.get("FLEET_BENCH_REDIS_SOCKET", "/tmp/redis.sock")
BROKER = "redis+socket://" + SOCKET
COMMAND = ["/bin/sh", "-c", os.environ.get("FLEET_BENCH_COMMAND", "true")]

app = Celery("fleet_celery", broker=BROKER)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    task_default_queue="fleet",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_counter = None


@app.task(name="fleet.run")
def run(record_id, payload):
    """Runs the command with the payload on stdin; counts it when it exits 0."""
    global _counter
    done = subprocess.run(COMMAND, input=payload.encode(), stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"record {record_id}: exit code {done.returncode}")
    if _counter is None:
        _counter = redis.Redis(unix_socket_path=SOCKET)
    _counter.incr("fleet:done")


def enqueue(n):
    """Sends n tasks, then resets the counter."""
    r = redis.Redis(unix_socket_path=SOCKET)
    r.delete("fleet:done")
    with app.producer_or_acquire() as producer:
        for i in range(n):
            run.apply_async(args=(f"r{i}", '{"record": %d, "pad": "0123456789abcdef"}' % i), producer=producer)
    print(f"enqueued {n} tasks", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "enqueue":
        enqueue(int(sys.argv[2]))
    else:
        sys.exit("usage: fleet_celery.py enqueue N")
