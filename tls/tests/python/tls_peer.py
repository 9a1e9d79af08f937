#!/usr/bin/env python3
"""A sockmsg peer over Python's ``ssl`` module, for interop tests of sockmsg-tls.

    tls_peer.py client HOST PORT --cafile CA [--cert FILE --key FILE]
                       [--server-name NAME] [--timeout S] ACTION VALUE
    tls_peer.py server --cert FILE --key FILE [--client-ca CA] [--count N]
                       [--timeout S]

The framing and the demo answers are the guide's, from tests/python/libmsg.py
(its directory is given by $SOCKMSG_LIBMSG_DIR).

client: ``ssl.create_default_context(cafile=CA)`` (certificate and name checked),
optionally ``load_cert_chain`` for mutual TLS; sends one guide request (``search``
gives text/json, anything else binary), reads one response, closes. Prints
``got result: RESULT`` or ``got response: REPR`` and exits 0; on any error prints
it to stderr and exits 1.

server: listens on 127.0.0.1, port chosen by the system, prints ``listening PORT``;
serves COUNT connections one after another (default 1), one request each, with the
guide's demo answers; with ``--client-ca`` a client certificate is required and the
server prints ``peer: CN`` for each client. A connection that fails its handshake
prints ``handshake failed: REASON`` and the server goes on with the next.
"""

import argparse
import os
import socket
import ssl
import sys

sys.path.insert(0, os.environ.get("SOCKMSG_LIBMSG_DIR", "."))
import libmsg  # noqa: E402


def client(args):
    context = ssl.create_default_context(cafile=args.cafile)
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    request = libmsg.create_request(args.action, args.value)
    message = libmsg._create_message(**libmsg.request_message_kwargs(request))
    with socket.create_connection((args.host, args.port), timeout=args.timeout) as raw:
        with context.wrap_socket(raw, server_hostname=args.server_name or args.host) as sock:
            sock.sendall(message)
            jsonheader, content = libmsg.recv_message_blocking(sock)
    if jsonheader["content-type"] == "text/json":
        print(f"got result: {content.get('result')}")
    else:
        print(f"got response: {content!r}")


def server(args):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    if args.client_ca:
        context.load_verify_locations(args.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(args.timeout)
    print(f"listening {listener.getsockname()[1]}", flush=True)
    for _ in range(args.count):
        raw, _addr = listener.accept()
        raw.settimeout(args.timeout)
        try:
            sock = context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            print(f"handshake failed: {e}", flush=True)
            raw.close()
            continue
        with sock:
            if args.client_ca:
                subject = dict(x[0] for x in sock.getpeercert()["subject"])
                print(f"peer: {subject.get('commonName')}", flush=True)
            try:
                jsonheader, request = libmsg.recv_message_blocking(sock)
            except (ssl.SSLError, OSError, RuntimeError) as e:
                print(f"request failed: {e}", flush=True)
                continue
            kwargs = libmsg.create_response_kwargs(jsonheader, request)
            sock.sendall(libmsg._create_message(**kwargs))
            print("answered", flush=True)
    listener.close()


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("client")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("action")
    c.add_argument("value")
    c.add_argument("--cafile", required=True)
    c.add_argument("--cert")
    c.add_argument("--key")
    c.add_argument("--server-name")
    c.add_argument("--timeout", type=float, default=10.0)
    s = sub.add_parser("server")
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--client-ca")
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    try:
        client(args) if args.mode == "client" else server(args)
    except Exception as e:  # one line, exit 1
        print(f"tls_peer.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
