#!/usr/bin/env python3
"""The client side of scripts/idle-rss.sh: idle connections to one app-server, and the
server's memory and CPU read from /proc while they are open.

    idle_rss.py --pid PID --port PORT -n N [--ca FILE] [--settle SECS]

Opens N connections to 127.0.0.1:PORT one after another (with --ca: TLS through Python's
ssl module, certificate and name checked, each handshake completed before the next
connection is made; without: plain TCP, nothing sent). Reads the server's resident set
(VmRSS of /proc/PID/status) before, once they are all open ("fresh"), and after one
request on each ("after": the demo's search request written on every connection, then
every answer read, as transport-mio/scripts/idle-memory.sh does), each time once it stops
moving (the server frees a connection's buffers 100 ms after its last I/O). The server's
CPU time (user + system, /proc/PID/stat) is read around the opening and the requests.

Prints one JSON object on stdout; exits 1 (one line on stderr) if a connection fails.
Closes every connection before it exits. Loopback only.
"""

import argparse
import json
import os
import resource
import socket
import ssl
import struct
import sys
import time

PROGRAM = "idle_rss.py"
TIMEOUT = 10.0


def fail(what, why):
    print(f"{PROGRAM}: {what}: {why}", file=sys.stderr)
    sys.exit(1)


def rss(pid):
    """The server's VmRSS in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    fail(f"/proc/{pid}/status", "no VmRSS line")


def cpu(pid):
    """The server's CPU time (user + system) in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces: count from the closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def settled_rss(pid, settle):
    """VmRSS once it stops moving: three reads 250 ms apart within 16 KiB of each other,
    after at least `settle` seconds; at most 30 s."""
    time.sleep(settle)
    deadline = time.monotonic() + 30
    reads = [rss(pid)]
    while time.monotonic() < deadline:
        time.sleep(0.25)
        reads.append(rss(pid))
        last = reads[-3:]
        if len(last) == 3 and max(last) - min(last) <= 16 * 1024:
            return last[-1]
    return reads[-1]


def request_bytes():
    """The demo's search request, framed as the guide frames it."""
    content = json.dumps({"action": "search", "value": "morpheus"}).encode()
    header = json.dumps(
        {
            "byteorder": sys.byteorder,
            "content-type": "text/json",
            "content-encoding": "utf-8",
            "content-length": len(content),
        }
    ).encode()
    return struct.pack(">H", len(header)) + header + content


def read_exact(sock, n, what):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            fail(what, "the server closed the connection")
        data += chunk
    return bytes(data)


def read_answer(sock, i):
    what = f"answer on connection {i}"
    (hlen,) = struct.unpack(">H", read_exact(sock, 2, what))
    header = json.loads(read_exact(sock, hlen, what))
    content = read_exact(sock, header["content-length"], what)
    answer = json.loads(content)
    if "result" not in answer:
        fail(what, f"not the demo's answer: {answer!r}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("-n", type=int, required=True)
    p.add_argument("--ca", help="TLS: the CA that signed the server's certificate")
    p.add_argument("--settle", type=float, default=1.0)
    args = p.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < args.n + 64:
        fail("raising the open-file limit", f"{args.n + 64} needed, hard limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    context = None
    if args.ca:
        context = ssl.create_default_context(cafile=args.ca)

    conns = []
    try:
        base = settled_rss(args.pid, 0.5)
        cpu0 = time.monotonic(), cpu(args.pid)
        for i in range(args.n):
            try:
                s = socket.create_connection(("127.0.0.1", args.port), timeout=TIMEOUT)
                if context is not None:
                    s = context.wrap_socket(s, server_hostname="localhost")
            except (OSError, ssl.SSLError) as e:
                fail(f"connection {i} to 127.0.0.1:{args.port}", e)
            conns.append(s)
        cpu1 = time.monotonic(), cpu(args.pid)
        fresh = settled_rss(args.pid, args.settle)

        wire = request_bytes()
        cpu2 = time.monotonic(), cpu(args.pid)
        for i, s in enumerate(conns):
            try:
                s.sendall(wire)
            except OSError as e:
                fail(f"request on connection {i}", e)
        for i, s in enumerate(conns):
            try:
                read_answer(s, i)
            except OSError as e:
                fail(f"answer on connection {i}", e)
        cpu3 = time.monotonic(), cpu(args.pid)
        after = settled_rss(args.pid, args.settle)
        nthreads = threads(args.pid)
        negotiated = None
        if context is not None and conns:
            negotiated = f"{conns[0].version()} {conns[0].cipher()[0]}"
    finally:
        for s in conns:
            s.close()

    print(
        json.dumps(
            {
                "tls": context is not None,
                "connections": args.n,
                "base_rss": base,
                "fresh_rss": fresh,
                "after_rss": after,
                "threads": nthreads,
                "negotiated": negotiated,
                "open_wall_s": round(cpu1[0] - cpu0[0], 3),
                "open_cpu_s": round(cpu1[1] - cpu0[1], 3),
                "request_wall_s": round(cpu3[0] - cpu2[0], 3),
                "request_cpu_s": round(cpu3[1] - cpu2[1], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
