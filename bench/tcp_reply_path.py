"""Raw pyzmq round trips over tcp on 127.0.0.1: the reply on the request's own connection
(the server's ROUTER answers, as the bench's raw echo does) against the reply on a second
connection (the server's DEALER to the client's ROUTER inbox, as zactor's worker answers).

Run: ``python bench/tcp_reply_path.py``; prints the median round trip of each, 4
interleaved rounds of 4,000. It answers whether zactor's reply path costs a wake-up
or an ACK more than the yardstick's (BENCHMARKS.md, "Across nodes").
"""

import statistics
import subprocess
import sys
import time

import zmq


def server(mode: str) -> None:
    """Echo until "stop": on the request's connection ("one"), or on a connection of
    its own to the client's inbox, whose address the request's routing id names."""
    ctx = zmq.Context(io_threads=1)
    inbox = ctx.socket(zmq.ROUTER)
    port = inbox.bind_to_random_port("tcp://127.0.0.1")
    print(port, flush=True)
    back = None
    while True:
        ident, body = inbox.recv_multipart()
        if body == b"stop":
            break
        if mode == "one":
            inbox.send_multipart([ident, body])
        else:
            if back is None:
                back = ctx.socket(zmq.DEALER)
                back.connect(ident.decode())
            back.send(body)


if sys.argv[1:2] == ["server"]:
    server(sys.argv[2])
    sys.exit()


def run(mode: str, n: int = 4000) -> float:
    """The median round trip (µs) of ``n`` exchanges with a server answering as ``mode``."""
    p = subprocess.Popen([sys.executable, __file__, "server", mode], stdout=subprocess.PIPE)
    port = int(p.stdout.readline())
    ctx = zmq.Context(io_threads=1)
    out = ctx.socket(zmq.DEALER)
    if mode == "one":
        out.connect(f"tcp://127.0.0.1:{port}")
        inbox = out
    else:
        inbox = ctx.socket(zmq.ROUTER)
        inbox_port = inbox.bind_to_random_port("tcp://127.0.0.1")
        out.identity = f"tcp://127.0.0.1:{inbox_port}".encode()
        out.connect(f"tcp://127.0.0.1:{port}")

    def round_trip() -> None:
        out.send(b"x")
        inbox.recv_multipart()

    for _ in range(300):
        round_trip()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        round_trip()
        ts.append(time.perf_counter() - t)
    out.send(b"stop")
    p.wait()
    ctx.destroy(0)
    return statistics.median(ts) * 1e6


if __name__ == "__main__":
    for r in range(4):
        one, two = run("one"), run("two")
        print(f"round {r}: one connection {one:.1f} us, two connections {two:.1f} us", flush=True)
