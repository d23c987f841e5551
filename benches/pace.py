#!/usr/bin/env python3
"""A slow link for benchmarks: a TCP proxy from 127.0.0.1:LISTEN to 127.0.0.1:TARGET that paces
each direction to RATE bit/s (shared by all connections, like one link) and delays every byte
by DELAY ms one way. After each connection closes it writes "up down" (bytes client→server and
server→client so far) to COUNTS.

    pace.py LISTEN TARGET RATE_BIT_PER_S DELAY_MS COUNTS
"""
import asyncio
import sys

listen, target, rate, delay_ms, counts = sys.argv[1:6]
RATE = float(rate)
DELAY = float(delay_ms) / 1000


class Link:
    """One direction: a byte leaves when the link is free, and arrives DELAY later."""

    def __init__(self):
        self.free_at = 0.0
        self.bytes = 0

    def arrival(self, n):
        now = asyncio.get_running_loop().time()
        start = max(now, self.free_at)
        self.free_at = start + n * 8 / RATE
        self.bytes += n
        return self.free_at + DELAY


UP, DOWN = Link(), Link()


async def pipe(reader, writer, link):
    queue = asyncio.Queue()

    async def deliver():
        loop = asyncio.get_running_loop()
        while True:
            item = await queue.get()
            if item is None:
                break
            at, data = item
            wait = at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(16384)
            if not data:
                break
            queue.put_nowait((link.arrival(len(data)), data))
    except ConnectionError:
        pass
    queue.put_nowait(None)
    try:
        await sender
    except ConnectionError:
        pass


async def handle(client_r, client_w):
    server_r, server_w = await asyncio.open_connection("127.0.0.1", int(target))
    await asyncio.gather(pipe(client_r, server_w, UP), pipe(server_r, client_w, DOWN))
    with open(counts, "w") as f:
        f.write(f"{UP.bytes} {DOWN.bytes}\n")


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(listen))
    async with server:
        await server.serve_forever()


asyncio.run(main())
