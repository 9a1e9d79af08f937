#!/usr/bin/env python3
"""Self-test of the Python guide peers (guide_server, guide_client, oneshot).

    python3 tests/python/selftest.py [-v]

Everything runs on 127.0.0.1 with OS-assigned ports; every network operation
and every subprocess is bounded in time, and every server started here is
stopped at the end. Checks:

* each demo case through guide_server.py + guide_client.py (stdout, exit 0);
* the captured bytes equal PROTOCOL.md's worked examples exactly (146-byte
  search request, 148-byte response, binary ☺ request/response, 139-byte
  big-endian dog request), and the server's captures equal the clients';
* the server copes with a request delivered one byte per send(), and closes
  a connection whose JSON header lacks a required key without answering;
* guide_client.py exits 1 on refused connection, peer closing early,
  protocol error and timeout;
* --once, and a clean exit (status 0) on SIGTERM;
* oneshot_server.py answers like guide_server.py.

Exit status 0 on success, 1 on the first failure.
"""

import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = "127.0.0.1"
PY = sys.executable
VERBOSE = "-v" in sys.argv[1:]

# PROTOCOL.md, "Worked examples (exact bytes)".
SEARCH_MORPHEUS_REQUEST = (
    b'\x00g{"byteorder": "little", "content-type": "text/json", '
    b'"content-encoding": "utf-8", "content-length": 41}'
    b'{"action": "search", "value": "morpheus"}'
)
SEARCH_MORPHEUS_RESPONSE = (
    b'\x00g{"byteorder": "little", "content-type": "text/json", '
    b'"content-encoding": "utf-8", "content-length": 43}'
    b'{"result": "Follow the white rabbit. \xf0\x9f\x90\xb0"}'
)
SEARCH_DOG_BIG_REQUEST = (
    b'\x00d{"byteorder": "big", "content-type": "text/json", '
    b'"content-encoding": "utf-8", "content-length": 37}'
    b'{"action": "search", "value": "\xf0\x9f\x90\xb6"}'
)
BINARY_REQUEST = (
    b'\x00~{"byteorder": "little", "content-type": '
    b'"binary/custom-client-binary-type", "content-encoding": "binary", '
    b'"content-length": 9}binary\xe2\x98\xba'
)
BINARY_RESPONSE = (
    b'\x00\x7f{"byteorder": "little", "content-type": '
    b'"binary/custom-server-binary-type", "content-encoding": "binary", '
    b'"content-length": 36}First 10 bytes of request: binary\xe2\x98\xba'
)

assert len(SEARCH_MORPHEUS_REQUEST) == 146
assert len(SEARCH_MORPHEUS_RESPONSE) == 148
assert len(SEARCH_DOG_BIG_REQUEST) == 139

# (name, ACTION, VALUE, extra client flags, expected stdout line,
#  expected request bytes or None, expected response bytes or None)
CASES = [
    ("search morpheus", "search", "morpheus", ["--byteorder", "little"],
     "got result: Follow the white rabbit. \U0001f430",
     SEARCH_MORPHEUS_REQUEST, SEARCH_MORPHEUS_RESPONSE),
    ("search ring", "search", "ring", ["--byteorder", "little"],
     "got result: In the caves beneath the Misty Mountains. \U0001f48d",
     None, None),
    ("search dog (big-endian)", "search", "\U0001f436", ["--byteorder", "big"],
     "got result: \U0001f43e Playing ball! \U0001f3d0",
     SEARCH_DOG_BIG_REQUEST, None),
    ("search nothing", "search", "nothing", [],
     'got result: No match for "nothing".', None, None),
    ("invalid action (JSON)", "find", "x", ["--json-action"],
     'got result: Error: invalid action "find".', None, None),
    ("binary ☺", "binary", "\u263a", ["--byteorder", "little"],
     "got response: b'First 10 bytes of request: binary\\xe2\\x98\\xba'",
     BINARY_REQUEST, BINARY_RESPONSE),
    ("binary, longer than 10 bytes", "upload", "0123456789abc", [],
     "got response: b'First 10 bytes of request: upload0123'", None, None),
]


# Every server started, so that main() can make sure all of them are stopped.
STARTED = []


class Failure(Exception):
    pass


def check(cond, what, detail=""):
    """Raise Failure (with ``detail``) unless ``cond``; log ``what`` with -v."""
    if not cond:
        raise Failure(f"{what}\n{detail}" if detail else what)
    if VERBOSE:
        print(f"  ok: {what}")


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def child_env():
    env = dict(os.environ)
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class Server:
    """A server subprocess on port 0; its port is read from --port-file."""

    stopped = False

    def __init__(self, tmp, name, script, *extra):
        self.port_file = os.path.join(tmp, f"{name}.port")
        self.stderr_path = os.path.join(tmp, f"{name}.stderr")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [PY, os.path.join(HERE, script), HOST, "0",
             "--port-file", self.port_file, *extra],
            stdout=subprocess.PIPE, stderr=self._stderr, env=child_env(),
        )
        STARTED.append(self)
        self.port = self._wait_port(10.0)

    def _wait_port(self, limit):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"server exited early ({self.proc.returncode}):"
                              f"\n{self.stderr()}")
            try:
                text = read_file(self.port_file).decode()
            except FileNotFoundError:
                text = ""
            if text.endswith("\n"):
                return int(text)
            time.sleep(0.02)
        raise Failure("server did not write its port file in time")

    def stderr(self):
        return read_file(self.stderr_path).decode("utf-8", "replace")

    def wait(self, limit):
        """Wait for the server to exit on its own; returns its status."""
        try:
            return self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        """SIGTERM, then wait (bounded), then SIGKILL; returns the status."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.stdout_text = self.proc.stdout.read().decode("utf-8", "replace")
        self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode


def run_client(tmp, port, name, action, value, *flags, timeout=5):
    cap_out = os.path.join(tmp, f"client-{name}.out")
    cap_in = os.path.join(tmp, f"client-{name}.in")
    proc = subprocess.run(
        [PY, os.path.join(HERE, "guide_client.py"), HOST, str(port),
         action, value, "--capture-out", cap_out, "--capture-in", cap_in,
         "--timeout", str(timeout), *flags],
        capture_output=True, timeout=timeout + 10, env=child_env(),
    )
    sent = read_file(cap_out) if os.path.exists(cap_out) else b""
    received = read_file(cap_in) if os.path.exists(cap_in) else b""
    return proc, sent, received


def fmt(proc):
    return (f"exit {proc.returncode}\n--- stdout\n"
            f"{proc.stdout.decode('utf-8', 'replace')}--- stderr\n"
            f"{proc.stderr.decode('utf-8', 'replace')}")


def run_demo_cases(tmp, port, label):
    """Run every demo case; returns the concatenated (sent, received)."""
    all_sent, all_received = b"", b""
    for i, (name, action, value, flags, want, want_req, want_resp) in \
            enumerate(CASES):
        proc, sent, received = run_client(
            tmp, port, f"{label}{i}", action, value, *flags)
        check(proc.returncode == 0, f"[{label}] {name}: exit 0", fmt(proc))
        out = proc.stdout.decode("utf-8")
        check(out == want + "\n", f"[{label}] {name}: stdout",
              f"got {out!r}, want {want + chr(10)!r}")
        if want_req is not None:
            check(sent == want_req,
                  f"[{label}] {name}: request bytes == PROTOCOL.md "
                  f"({len(want_req)} bytes)", f"got {sent!r}")
        if want_resp is not None:
            check(received == want_resp,
                  f"[{label}] {name}: response bytes == PROTOCOL.md "
                  f"({len(want_resp)} bytes)", f"got {received!r}")
        all_sent += sent
        all_received += received
    return all_sent, all_received


def raw_exchange(port, chunks, limit=5.0):
    """Send chunks (one send() each, small pause between) and read until the
    server closes; returns all received bytes."""
    with socket.create_connection((HOST, port), timeout=limit) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for chunk in chunks:
            s.sendall(chunk)
            time.sleep(0.005)
        data = b""
        while True:
            part = s.recv(4096)
            if not part:
                return data
            data += part


class FakePeer:
    """A one-connection TCP listener on 127.0.0.1 that runs ``behaviour``
    (a function of the accepted socket) in a thread; bounded by timeouts."""

    def __init__(self, behaviour):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind((HOST, 0))
        self.lsock.listen()
        self.lsock.settimeout(10)
        self.port = self.lsock.getsockname()[1]
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(behaviour,),
                                       daemon=True)
        self.thread.start()

    def _run(self, behaviour):
        try:
            conn, _ = self.lsock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            try:
                behaviour(conn, self.stop_event)
            except OSError:
                pass

    def close(self):
        self.stop_event.set()
        self.thread.join(timeout=15)
        self.lsock.close()


def read_some(conn):
    try:
        conn.recv(4096)
    except OSError:
        pass


def peer_closes_immediately(conn, stop):
    read_some(conn)


def peer_closes_mid_response(conn, stop):
    read_some(conn)
    # A complete protoheader and JSON header, then only 5 of 43 content bytes.
    conn.sendall(SEARCH_MORPHEUS_RESPONSE[:2 + 103 + 5])


def peer_missing_header(conn, stop):
    read_some(conn)
    header = b'{"byteorder": "little", "content-type": "text/json"}'
    conn.sendall(struct.pack(">H", len(header)) + header + b'{"result": 1}')
    stop.wait(10)


def peer_silent(conn, stop):
    read_some(conn)
    stop.wait(10)


def test_client_errors(tmp):
    for name, behaviour in [
        ("peer closes before responding", peer_closes_immediately),
        ("peer closes mid-response", peer_closes_mid_response),
        ("missing required header", peer_missing_header),
    ]:
        peer = FakePeer(behaviour)
        try:
            proc, _, _ = run_client(tmp, peer.port, "err", "search", "morpheus")
        finally:
            peer.close()
        check(proc.returncode == 1, f"client error: {name}: exit 1", fmt(proc))
        check(proc.stdout == b"", f"client error: {name}: nothing on stdout")
        check(proc.stderr != b"", f"client error: {name}: message on stderr")

    peer = FakePeer(peer_silent)
    try:
        start = time.monotonic()
        proc, _, _ = run_client(tmp, peer.port, "err", "search", "morpheus",
                                timeout=1)
        elapsed = time.monotonic() - start
    finally:
        peer.close()
    check(proc.returncode == 1, f"client error: timeout: exit 1", fmt(proc))
    check(b"timed out" in proc.stderr, "client error: timeout: says timed out")
    check(elapsed < 5, f"client error: timeout honoured ({elapsed:.1f} s)")

    # A port nobody listens on: bind it, then close it without listening.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    proc, _, _ = run_client(tmp, port, "err", "search", "morpheus")
    check(proc.returncode == 1, f"client error: refused: exit 1", fmt(proc))


def test_guide_server(tmp):
    cap_in = os.path.join(tmp, "server.in")
    cap_out = os.path.join(tmp, "server.out")
    server = Server(tmp, "guide", "guide_server.py", "--byteorder", "little",
                    "--capture-in", cap_in, "--capture-out", cap_out)
    try:
        sent, received = run_demo_cases(tmp, server.port, "guide")

        # One byte per send(): the guide's state machine must wait for more.
        data = raw_exchange(server.port, [bytes([b]) for b in
                                          SEARCH_MORPHEUS_REQUEST])
        check(data == SEARCH_MORPHEUS_RESPONSE,
              "guide server: request split into 1-byte sends answered exactly")
        sent += SEARCH_MORPHEUS_REQUEST
        received += data

        # A JSON header without content-length: the server raises (guide:
        # process_jsonheader) and closes the connection without answering.
        header = b'{"byteorder": "little", "content-type": "text/json", ' \
                 b'"content-encoding": "utf-8"}'
        bad = struct.pack(">H", len(header)) + header
        data = raw_exchange(server.port, [bad])
        check(data == b"", "guide server: missing header -> closed, no answer")
        check('Missing required header "content-length".' in server.stderr(),
              "guide server: logs the missing header")
        sent += bad
        check(server.proc.poll() is None, "guide server: still running")

        # And it keeps serving.
        proc, _, _ = run_client(tmp, server.port, "after", "search", "ring")
        check(proc.returncode == 0, "guide server: serves after an error",
              fmt(proc))
        sent += read_file(os.path.join(tmp, "client-after.out"))
        received += read_file(os.path.join(tmp, "client-after.in"))
    finally:
        status = server.stop()
    check(status == 0, f"guide server: exit 0 on SIGTERM (got {status})",
          server.stderr())
    check(server.stdout_text == f"listening on ('{HOST}', {server.port})\n",
          "guide server: stdout is the listening line",
          f"got {server.stdout_text!r}")
    log_text = server.stderr()
    for needle in ("accepted connection from", "received request",
                   "sending", "closing connection to"):
        check(needle in log_text, f"guide server: logs {needle!r}")
    check(read_file(cap_in) == sent,
          "guide server: --capture-in == all bytes the clients sent")
    check(read_file(cap_out) == received,
          "guide server: --capture-out == all bytes the clients received")


def test_once(tmp):
    server = Server(tmp, "once", "guide_server.py", "--once")
    try:
        proc, _, _ = run_client(tmp, server.port, "once", "search", "ring")
        check(proc.returncode == 0, "--once: client ok", fmt(proc))
        status = server.wait(5)
        check(status == 0, f"--once: server exited 0 after one connection "
                           f"(got {status})")
    finally:
        server.stop()


def test_oneshot(tmp):
    server = Server(tmp, "oneshot", "oneshot_server.py", "--byteorder",
                    "little", "--timeout", "5")
    try:
        run_demo_cases(tmp, server.port, "oneshot")
        data = raw_exchange(server.port, [bytes([b]) for b in BINARY_REQUEST])
        check(data == BINARY_RESPONSE,
              "oneshot server: 1-byte sends answered exactly")
    finally:
        status = server.stop()
    check(status == 0, f"oneshot server: exit 0 on SIGTERM (got {status})",
          server.stderr())


def main():
    tests = [
        ("guide_server + guide_client", test_guide_server),
        ("guide_server --once", test_once),
        ("guide_client errors", test_client_errors),
        ("oneshot_server", test_oneshot),
    ]
    with tempfile.TemporaryDirectory(prefix="sockmsg-pyselftest-") as tmp:
        try:
            for name, test in tests:
                start = time.monotonic()
                try:
                    test(tmp)
                except Failure as e:
                    print(f"FAIL {name}: {e}", file=sys.stderr)
                    return 1
                except Exception:
                    # Timeouts (subprocess or socket) and anything unexpected.
                    print(f"FAIL {name}: unexpected error:\n"
                          f"{traceback.format_exc()}", file=sys.stderr)
                    return 1
                print(f"ok   {name} ({time.monotonic() - start:.2f} s)")
        finally:
            for server in STARTED:
                server.stop()
    print("selftest passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
