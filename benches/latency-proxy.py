#!/usr/bin/env python3
"""A TCP proxy that puts an ocean between a client and a server on loopback.

Every chunk is delivered `--one-way-ms` after it arrived, in each direction,
in order, without a bandwidth cap (chunks are queued, not serialised), so a
request and its answer cost one round trip of 2 x one-way. A new connection
costs one more round trip before its first byte goes out, as the TCP
handshake does (TLS would add one or two more; not modelled). It counts the
connections and the requests (GET/HEAD/PUT/POST/DELETE request lines, which
S3 clients send without a body here) and writes them to `--stats` when it
gets SIGTERM.

Usage: latency-proxy.py LISTEN_PORT UPSTREAM_HOST:PORT [--one-way-ms 50] [--stats FILE]
"""

import argparse
import asyncio
import json
import re
import signal
import time

REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|HEAD|PUT|POST|DELETE) /")

stats = {"connections": 0, "requests": 0}


async def pump(reader, writer, delay, first_extra, count):
    queue = asyncio.Queue()

    async def deliver():
        while True:
            at, data = await queue.get()
            if data is None:
                break
            wait = at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass

    task = asyncio.create_task(deliver())
    tail = b""
    extra = first_extra
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            if count:
                # A request line split across two reads is counted once.
                seen = tail + data
                stats["requests"] += len(REQUEST_LINE.findall(seen)) - len(
                    REQUEST_LINE.findall(tail)
                )
                tail = seen[-16:]
            queue.put_nowait((time.monotonic() + delay + extra, data))
            extra = 0.0
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((0, None))
    try:
        await task
    except (ConnectionError, OSError):
        pass


async def handle(client_r, client_w, upstream, delay):
    stats["connections"] += 1
    host, port = upstream.rsplit(":", 1)
    try:
        up_r, up_w = await asyncio.open_connection(host, int(port))
    except OSError:
        client_w.close()
        return
    await asyncio.gather(
        pump(client_r, up_w, delay, 2 * delay, True),
        pump(up_r, client_w, delay, 0.0, False),
    )
    for w in (up_w, client_w):
        try:
            w.close()
        except OSError:
            pass


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("upstream")
    p.add_argument("--one-way-ms", type=float, default=50.0)
    p.add_argument("--stats")
    a = p.parse_args()
    delay = a.one_way_ms / 1000.0
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, a.upstream, delay), "127.0.0.1", a.port, backlog=1024
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: write_stats(a.stats, reset=True))
    async with server:
        await stop.wait()
    write_stats(a.stats, reset=False)


def write_stats(path, reset):
    if path:
        with open(path, "w") as f:
            json.dump(stats, f)
    if reset:
        stats["connections"] = 0
        stats["requests"] = 0


if __name__ == "__main__":
    asyncio.run(main())
