#!/usr/bin/env python3
"""A plain blocking one-shot server, for benchmark comparison.

    oneshot_server.py HOST PORT [--port-file FILE] [--byteorder little|big]
                      [--timeout SECONDS]

Loops forever: accept a connection, read one request with the guide's framing
(libmsg.recv_message_blocking), answer it with the guide's demo application,
close the connection. No selectors, no threads: one connection at a time.

* PORT may be 0: the real bound port is then written (number + newline) to
  --port-file; ``listening on (HOST, PORT)`` is printed to stdout either way.
* --byteorder: the byte order written in response headers (default:
  sys.byteorder).
* --timeout: per-connection socket timeout in seconds (default 30), so one
  stuck client cannot block the server forever.

Per-connection errors are logged to stderr and only close that connection.
SIGTERM and SIGINT make it exit with status 0.
"""

import argparse
import signal
import socket
import sys
import traceback

import libmsg
from guide_server import Shutdown, _raise_shutdown, write_port_file
from libmsg import log


def parse_args(argv):
    p = argparse.ArgumentParser(description="Blocking one-shot server.")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--port-file", metavar="FILE",
                   help="write the bound port (number + newline) here")
    p.add_argument("--byteorder", choices=("little", "big"), default=None,
                   help="byteorder written in response headers "
                        "(default: sys.byteorder)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="per-connection socket timeout (default 30)")
    return p.parse_args(argv)


def serve_one(conn, byteorder):
    """Read one request, answer it (the guide's demo application)."""
    jsonheader, request = libmsg.recv_message_blocking(conn)
    response = libmsg.create_response_kwargs(jsonheader, request)
    conn.sendall(libmsg._create_message(**response, byteorder=byteorder))


def main(argv=None):
    args = parse_args(argv)
    libmsg.use_utf8_stdio()
    signal.signal(signal.SIGTERM, _raise_shutdown)
    signal.signal(signal.SIGINT, _raise_shutdown)

    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((args.host, args.port))
        lsock.listen()
        port = lsock.getsockname()[1]
        if args.port_file:
            write_port_file(args.port_file, port)
        print("listening on", (args.host, port), flush=True)
        while True:
            conn, addr = lsock.accept()
            with conn:
                conn.settimeout(args.timeout)
                try:
                    serve_one(conn, args.byteorder)
                except Exception:
                    log("error: exception for",
                        f"{addr}:\n{traceback.format_exc()}")
    except Shutdown as e:
        log(f"caught signal {e.args[0]}, exiting")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        lsock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
