#!/usr/bin/env python3
"""The Python sockets guide's app-server.py, as an interop test peer.

    guide_server.py HOST PORT [--once] [--capture-in FILE] [--capture-out FILE]
                    [--port-file FILE] [--byteorder little|big]

A selectors-based, non-blocking server: each connection carries one request;
the server answers it with the guide's demo application and closes the
connection once the response is sent (libmsg.ServerMessage mirrors the guide's
libserver.Message).

* PORT may be 0: the real bound port is then written (number + newline) to
  --port-file, and ``listening on (HOST, PORT)`` shows the real port.
* --once: exit after the first connection is closed.
* --capture-in / --capture-out: append the raw bytes received from / sent to
  clients to these files.
* --byteorder: the byte order written in response headers (default:
  sys.byteorder, as in the guide).

Log lines (accepted connection from, received request, sending, closing
connection to, errors) go to stderr; ``listening on ...`` goes to stdout.
SIGTERM and SIGINT make it close every socket and exit with status 0.
"""

import argparse
import os
import selectors
import signal
import socket
import sys
import traceback

import libmsg
from libmsg import log


class Shutdown(BaseException):
    """Raised by the signal handler; a BaseException so that the guide's
    per-connection ``except Exception`` does not swallow it."""


def _raise_shutdown(signum, frame):
    raise Shutdown(signum)


def write_port_file(path, port):
    # Write then rename, so a reader never sees a partial file.
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def parse_args(argv):
    p = argparse.ArgumentParser(description="The sockets guide's app-server.")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--once", action="store_true",
                   help="exit after the first connection is closed")
    p.add_argument("--capture-in", metavar="FILE",
                   help="append the raw bytes received from clients")
    p.add_argument("--capture-out", metavar="FILE",
                   help="append the raw bytes sent to clients")
    p.add_argument("--port-file", metavar="FILE",
                   help="write the bound port (number + newline) here")
    p.add_argument("--byteorder", choices=("little", "big"), default=None,
                   help="byteorder written in response headers "
                        "(default: sys.byteorder)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    libmsg.use_utf8_stdio()
    signal.signal(signal.SIGTERM, _raise_shutdown)
    signal.signal(signal.SIGINT, _raise_shutdown)

    capture_in = libmsg.Capture(args.capture_in)
    capture_out = libmsg.Capture(args.capture_out)
    closed_connections = 0

    def on_close(message):
        nonlocal closed_connections
        closed_connections += 1

    sel = selectors.DefaultSelector()

    def accept_wrapper(sock):
        # Guide: accept, make non-blocking, attach a Message, watch for reads.
        conn, addr = sock.accept()  # Should be ready to read
        log("accepted connection from", addr)
        conn.setblocking(False)
        message = libmsg.ServerMessage(
            sel, conn, addr,
            byteorder=args.byteorder,
            capture_in=capture_in,
            capture_out=capture_out,
            on_close=on_close,
        )
        sel.register(conn, selectors.EVENT_READ, data=message)

    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Avoid bind() exception: OSError: [Errno 48] Address already in use
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((args.host, args.port))
        lsock.listen()
        port = lsock.getsockname()[1]
        if args.port_file:
            write_port_file(args.port_file, port)
        print("listening on", (args.host, port), flush=True)
        lsock.setblocking(False)
        sel.register(lsock, selectors.EVENT_READ, data=None)

        # Guide: the event loop; errors of one connection close only it.
        while True:
            events = sel.select(timeout=None)
            for key, mask in events:
                if key.data is None:
                    accept_wrapper(key.fileobj)
                else:
                    message = key.data
                    try:
                        message.process_events(mask)
                    except Exception:
                        log("main: error: exception for",
                            f"{message.addr}:\n{traceback.format_exc()}")
                        message.close()
            if args.once and closed_connections >= 1:
                log("--once: first connection closed, exiting")
                break
    except Shutdown as e:
        log(f"caught signal {e.args[0]}, exiting")
    finally:
        # Ignore further signals while cleaning up.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for key in list(sel.get_map().values()):
            if key.data is not None:
                key.data.close()
        sel.close()
        lsock.close()
        capture_in.close()
        capture_out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
