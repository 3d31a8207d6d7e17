"""A connection flood: opens COUNT TCP connections to HOST:PORT, each sending
an unfinished request head (no final blank line), and holds them open for
HOLD_SECONDS after the last connect attempt. Standard library only.

Usage: python flood.py HOST PORT COUNT HOLD_SECONDS

Each connection ends in one state:
  open     still open when the hold ends (the flooder closes it then);
  reset    reset by the server (ECONNRESET/EPIPE on write or read);
  closed   closed by the server (EOF), possibly after an answer;
  failed   the connect itself failed or timed out (refused, SYN dropped);
           counts by exception in "connect_errors".
stdout: one JSON line per second while the flood runs ("progress"), then one
"summary" line. Wall-clock times (epoch seconds) mark when the flood started,
when every connect attempt had ended ("opened") and when the hold ended
("released"), so that other measurements can be split by phase.
"""

import asyncio
import json
import resource
import sys
import time

HEAD = b"GET /latest/meta-data/ HTTP/1.1\r\nhost: x\r\n"  # no final \r\n: unfinished
CONNECT_TIMEOUT = 10.0
IN_FLIGHT = 256  # connect attempts at once


def raise_file_limit(count):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    if hard != resource.RLIM_INFINITY and hard < wanted:
        sys.exit(f"flood.py: RLIMIT_NOFILE hard limit {hard} is below {wanted}")
    if soft == resource.RLIM_INFINITY or soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class Flood:
    def __init__(self):
        self.state = {"connecting": 0, "open": 0, "reset": 0, "closed": 0, "failed": 0}
        self.errors = {}  # connect failures by exception
        self.answered = 0  # connections on which the server sent bytes
        self.open_for = []  # seconds a server-closed connection stayed open
        self.release = asyncio.Event()
        self.started = time.time()

    def move(self, old, new):
        if old:
            self.state[old] -= 1
        self.state[new] += 1

    async def one(self, host, port, gate):
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
            except (ConnectionResetError, BrokenPipeError):
                # The handshake completed (the server accepted) and the reset
                # came before asyncio handed over the stream.
                self.move("connecting", "reset")
                return
            except (OSError, asyncio.TimeoutError) as error:
                self.move("connecting", "failed")
                self.errors[type(error).__name__] = self.errors.get(type(error).__name__, 0) + 1
                return
        opened_at = time.time()
        self.move("connecting", "open")
        try:
            writer.write(HEAD)
            await writer.drain()
            release = asyncio.ensure_future(self.release.wait())
            while True:
                read = asyncio.ensure_future(reader.read(4096))
                done, _ = await asyncio.wait({read, release}, return_when=asyncio.FIRST_COMPLETED)
                if read not in done:
                    read.cancel()
                    return  # still open at the end of the hold
                data = read.result()
                if not data:
                    self.move("open", "closed")
                    self.open_for.append(time.time() - opened_at)
                    return
                self.answered += 1
        except (ConnectionResetError, BrokenPipeError):
            self.move("open", "reset")
        except OSError:
            self.move("open", "closed")
            self.open_for.append(time.time() - opened_at)
        finally:
            writer.transport.abort()

    def line(self, kind, **extra):
        record = {"kind": kind, "t": round(time.time() - self.started, 3), **self.state, **extra}
        print(json.dumps(record), flush=True)


async def main(host, port, count, hold):
    flood = Flood()
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def progress():
        while True:
            await asyncio.sleep(1)
            flood.line("progress")

    reporter = asyncio.ensure_future(progress())
    flood.state["connecting"] = count
    tasks = [asyncio.ensure_future(flood.one(host, port, gate)) for _ in range(count)]
    while flood.state["connecting"]:
        await asyncio.sleep(0.01)
    opened = time.time()
    at_opened = dict(flood.state)
    await asyncio.sleep(hold)
    released = time.time()
    at_release = dict(flood.state)
    flood.release.set()
    await asyncio.gather(*tasks)
    reporter.cancel()
    open_for = sorted(flood.open_for)
    flood.line(
        "summary",
        count=count,
        start_epoch=flood.started,
        opened_epoch=opened,
        released_epoch=released,
        seconds_to_open=round(opened - flood.started, 3),
        at_opened=at_opened,
        at_release=at_release,
        answered=flood.answered,
        connect_errors=flood.errors,
        closed_after_s=[round(open_for[0], 2), round(open_for[len(open_for) // 2], 2), round(open_for[-1], 2)]
        if open_for
        else None,
    )


if __name__ == "__main__":
    h, p, n, s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    raise_file_limit(n)
    asyncio.run(main(h, p, n, s))
