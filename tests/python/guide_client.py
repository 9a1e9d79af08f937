#!/usr/bin/env python3
"""The Python sockets guide's app-client.py, as an interop test peer.

    guide_client.py HOST PORT ACTION VALUE [--byteorder little|big]
                    [--json-action] [--capture-out FILE] [--capture-in FILE]
                    [--timeout SECONDS]

Connects, sends one request, reads one response, closes (libmsg.ClientMessage
mirrors the guide's libclient.Message). The request is the guide's: ACTION
``search`` gives a text/json request {"action": ACTION, "value": VALUE};
any other ACTION a binary request (binary/custom-client-binary-type) whose
content is ACTION + VALUE in UTF-8.

* --byteorder: the byte order written in the request header (default:
  sys.byteorder, as in the guide).
* --json-action (not in the guide): send a text/json request whatever ACTION
  is, e.g. to get the server's ``Error: invalid action "A".`` answer.
* --capture-out / --capture-in: append the raw bytes sent to / received from
  the server to these files.
* --timeout: overall time limit in seconds (default 10).

On success prints ``got result: RESULT`` (JSON response: the value of
"result") or ``got response: REPR`` (binary response: repr of the bytes) to
stdout and exits 0. On any error (connection refused, peer closed before the
response was complete, protocol error, timeout) prints the error to stderr
and exits 1. Log lines go to stderr.
"""

import argparse
import selectors
import socket
import sys
import time
import traceback

import libmsg
from libmsg import log


def parse_args(argv):
    p = argparse.ArgumentParser(description="The sockets guide's app-client.")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("action")
    p.add_argument("value")
    p.add_argument("--byteorder", choices=("little", "big"), default=None,
                   help="byteorder written in the request header "
                        "(default: sys.byteorder)")
    p.add_argument("--json-action", action="store_true",
                   help="send a text/json request even if ACTION != search")
    p.add_argument("--capture-out", metavar="FILE",
                   help="append the raw bytes sent to the server")
    p.add_argument("--capture-in", metavar="FILE",
                   help="append the raw bytes received from the server")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="overall time limit (default 10)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    libmsg.use_utf8_stdio()

    request = libmsg.create_request(args.action, args.value, args.json_action)
    capture_in = libmsg.Capture(args.capture_in)
    capture_out = libmsg.Capture(args.capture_out)
    sel = selectors.DefaultSelector()
    deadline = time.monotonic() + args.timeout
    failed = False
    message = None

    try:
        # Guide: start_connection(): non-blocking connect_ex, then watch the
        # socket for both read and write events; Message.write() switches to
        # read-only once the request is sent.
        addr = (args.host, args.port)
        log("starting connection to", addr)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(addr)
        events = selectors.EVENT_READ | selectors.EVENT_WRITE
        message = libmsg.ClientMessage(
            sel, sock, addr, request,
            byteorder=args.byteorder,
            capture_in=capture_in,
            capture_out=capture_out,
        )
        sel.register(sock, events, data=message)

        # Guide: the event loop, until no socket is monitored any more.
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log(f"error: timed out after {args.timeout} s "
                    f"waiting for {addr}")
                failed = True
                message.close()
                break
            events = sel.select(timeout=min(1.0, remaining))
            for key, mask in events:
                message = key.data
                try:
                    message.process_events(mask)
                except Exception:
                    log("main: error: exception for",
                        f"{message.addr}:\n{traceback.format_exc()}")
                    failed = True
                    message.close()
            # Check for a socket being monitored to continue.
            if not sel.get_map():
                break
    except KeyboardInterrupt:
        log("caught keyboard interrupt, exiting")
        failed = True
        if message is not None:
            message.close()
    except Exception:
        log(f"error:\n{traceback.format_exc()}")
        failed = True
        if message is not None:
            message.close()
    finally:
        sel.close()
        capture_in.close()
        capture_out.close()

    if failed or message is None or message.result_line is None:
        if not failed:
            log("error: connection closed without a complete response")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
