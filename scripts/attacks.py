#!/usr/bin/env python3
"""The attacks of issue 12 against a release `app-server` (and `app-client`), on loopback.

Run through `scripts/attacks.sh`, which builds the binaries and passes their paths:

    attacks.py --server target/release/app-server --client target/release/app-client \
               [--transport mio] [--transport std] [--only NAME] [--verbose]

Without --transport, every transport `app-server` lists in its usage error.

Every attack starts its own server on 127.0.0.1, port 0, so each row starts from the same
baseline, and stops it afterwards. Figures of the server process come from /proc:

* base: VmRSS once listening, before the attack;
* peak: VmHWM during the attack (reset with `5 > /proc/PID/clear_refs` before it);
* kept: VmRSS 2 s after the attack ended (or, for attacks that hold connections, while
  they are held);
* CPU: user + system time of the server (/proc/PID/stat) during the attack;
* good client: how long a guide request (search "morpheus") sent while the attack runs
  waited for its answer ("locked out" if none came within its 5 s);
* log: bytes the server wrote to stderr (its log, default level) during the attack.

Everything is bounded in time: sockets have timeouts, waits have limits, servers are
killed if they do not stop. Only 127.0.0.1 is ever used.
"""

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
GOOD_TIMEOUT = 5.0


# ---------------------------------------------------------------- the protocol, client side

def message(content: bytes, content_type="text/json", extra=None, content_length=None) -> bytes:
    """One message: 2-byte big-endian header length, JSON header, content."""
    header = {
        "byteorder": sys.byteorder,
        "content-type": content_type,
        "content-encoding": "utf-8",
        "content-length": len(content) if content_length is None else content_length,
    }
    if extra:
        header.update(extra)
    h = json.dumps(header, ensure_ascii=False).encode()
    return struct.pack(">H", len(h)) + h + content


def search(value_json: str) -> bytes:
    """A demo request whose value is the JSON text `value_json`."""
    return message(('{"action": "search", "value": ' + value_json + "}").encode())


GOOD_REQUEST = message(json.dumps({"action": "search", "value": "morpheus"}).encode())


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_answer(sock):
    """Reads one answer; returns its content length, or a word on why there is none."""
    try:
        raw = recv_exact(sock, 2)
        if raw is None:
            return "closed"
        (hlen,) = struct.unpack(">H", raw)
        header = recv_exact(sock, hlen)
        if header is None:
            return "closed in header"
        length = json.loads(header)["content-length"]
        content = recv_exact(sock, length)
        if content is None:
            return "closed in content"
        return length
    except socket.timeout:
        return "timed out"
    except ConnectionResetError:
        return "reset"
    except OSError as e:
        return f"error {e.errno}"


def good_client(addr, timeout=GOOD_TIMEOUT):
    """Seconds a guide request waited for its answer, or why it got none."""
    start = time.monotonic()
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            s.settimeout(max(0.1, timeout - (time.monotonic() - start)))
            s.sendall(GOOD_REQUEST)
            got = read_answer(s)
    except socket.timeout:
        return f"locked out ({timeout:.0f} s)"
    except OSError as e:
        return f"refused ({e.strerror})"
    waited = time.monotonic() - start
    if isinstance(got, int):
        return f"{waited * 1000:.0f} ms" if waited < 10 else f"{waited:.1f} s"
    if got == "closed" and waited < 1:
        return "refused (closed at once)"
    if got == "timed out":
        return f"locked out ({timeout:.0f} s)"
    return f"{got} after {waited:.1f} s"


# ---------------------------------------------------------------- the server process

class Server:
    def __init__(self, binary, transport, *args):
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [binary, HOST, "0", "--transport", transport, *args],
            stdout=subprocess.PIPE, stderr=self.log,
            # The default log level: RUST_LOG would replace it.
            env={k: v for k, v in os.environ.items() if k != "RUST_LOG"},
        )
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise SystemExit(f"attacks: app-server did not start: {line!r}")
        host, port = line.split()[-1].rsplit(":", 1)
        self.addr = (HOST, int(port))
        self.pid = self.proc.pid
        time.sleep(0.2)
        self.base = self.rss()

    def status(self, key):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def rss(self):
        return self.status("VmRSS")

    def peak(self):
        return self.status("VmHWM")

    def reset_peak(self):
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def cpu(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def threads(self):
        return self.status("Threads") // 1024

    def log_bytes(self):
        return os.fstat(self.log.fileno()).st_size

    def log_text(self):
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


class Measure:
    """Figures of one attack on one server, from just before to just after it."""

    def __init__(self, server):
        self.server = server
        self.reset = server.reset_peak()
        self.cpu0 = server.cpu()
        self.log0 = server.log_bytes()
        self.peak = None

    def end(self):
        self.peak = self.server.peak()
        self.cpu = self.server.cpu() - self.cpu0
        self.log = self.server.log_bytes() - self.log0


def mib(n):
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n / 1024:.0f} KiB" if n >= 10 * 1024 else f"{n} B"


ROWS = []


def row(attack, transport, sent, server=None, m=None, kept=None, good="", note=""):
    ROWS.append({
        "attack": attack,
        "transport": transport,
        "sent": mib(sent) if isinstance(sent, int) else sent,
        "base": mib(server.base) if server else "",
        "peak": (mib(m.peak) + ("" if m.reset else " (since start)")) if m else "",
        "kept": mib(kept) if isinstance(kept, int) else (kept or ""),
        "cpu": f"{m.cpu:.2f} s" if m else "",
        "good": good,
        "log": mib(m.log) if m else "",
        "note": note,
    })
    r = ROWS[-1]
    print(f"  {attack} [{transport}]: sent {r['sent']}, peak {r['peak']}, kept {r['kept']}, "
          f"cpu {r['cpu']}, good client {good}, log {r['log']}; {note}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- attacks

def one_request(args, transport, name, payload, extra_args=()):
    """Sends one hostile request, a good client while it is being handled, reads the answer."""
    srv = Server(args.server, transport, *extra_args)
    try:
        m = Measure(srv)
        outcome = {}

        def attacker():
            try:
                with socket.create_connection(srv.addr, timeout=60) as s:
                    s.sendall(payload)
                    outcome["sent_at"] = time.monotonic()
                    got = read_answer(s)
                    outcome["answer"] = got
                    outcome["took"] = time.monotonic() - outcome["sent_at"]
            except OSError as e:
                outcome["answer"] = f"error: {e}"

        t = threading.Thread(target=attacker)
        t.start()
        while "sent_at" not in outcome and t.is_alive():
            time.sleep(0.005)
        good = good_client(srv.addr)
        t.join(60)
        m.end()
        time.sleep(2)
        kept = srv.rss()
        ans = outcome.get("answer")
        if isinstance(ans, int):
            note = f"answer {mib(ans)} in {outcome['took']:.2f} s"
        else:
            note = f"no answer: {ans}"
        row(name, transport, len(payload), srv, m, kept, good, note)
    finally:
        srv.stop()


def distinct_keys(n):
    return "{" + ",".join(f'"k{i}":0' for i in range(n)) + "}"


def nested_singletons(size):
    unit = "[0],"
    return "[" + unit * ((size - 40) // len(unit)) + "[0]]"


def many_numbers(size):
    unit = "1e15,"
    return "[" + unit * ((size - 40) // len(unit)) + "1e15]"


def attack_keys(args, transport):
    for n in (16_000, 64_000, 128_000):
        one_request(args, transport, f"{n // 1000}k distinct keys", search(distinct_keys(n)))


def attack_nested(args, transport):
    one_request(args, transport, "16 MiB of [[0],...]", search(nested_singletons(16 * MIB - 64)))


def attack_numbers(args, transport):
    one_request(args, transport, "16 MiB of 1e15", search(many_numbers(16 * MIB - 64)))


def open_many(addr, n, first=b"", timeout=10):
    socks = []
    for _ in range(n):
        s = socket.create_connection(addr, timeout=timeout)
        if first:
            s.sendall(first)
        socks.append(s)
    return socks


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def attack_big_header(args, transport):
    """512 connections each sending a full 65,535-byte header whose extra key holds
    [0,0,...], announcing content that never comes."""
    n = 512
    h = (f'{{"byteorder": "{sys.byteorder}", "content-type": "text/json", '
         '"content-encoding": "utf-8", "content-length": 100, "x": [0').encode()
    h += b",0" * ((65535 - len(h) - 2) // 2)
    h += b" " * (65535 - len(h) - 2) + b"]}"
    assert len(h) == 65535
    json.loads(h)
    payload = struct.pack(">H", len(h)) + h
    srv = Server(args.server, transport, "--max-connections", str(n + 64))
    socks = []
    try:
        m = Measure(srv)
        socks = open_many(srv.addr, n, payload)
        time.sleep(1.0)
        good = good_client(srv.addr)
        m.end()
        held = srv.rss()
        close_all(socks)
        socks = []
        time.sleep(2)
        kept = srv.rss()
        per = (held - srv.base) / n
        row("65,535-byte header of [0,0,...], x512, held", transport, n * len(payload), srv, m,
            f"{mib(held)} held, {mib(kept)} after", good,
            f"{mib(int(per))} held per connection ({per / len(payload):.1f}x its bytes)")
    finally:
        close_all(socks)
        srv.stop()


def closes(srv, why):
    """How many connections the server's log says it closed for `why`."""
    return sum(1 for line in srv.log_text().splitlines()
               if "closing connection" in line and why in line)


def large_answers(args, transport, name, read_rate):
    """6 clients send requests whose answers are large (about 15.6 MiB each), then read
    them at `read_rate` bytes/s (0: never). Held RSS is taken at 3 s; then the attack waits
    (up to 45 s) for the server to close all six."""
    n = 6
    payload = search(many_numbers(int(3.9 * MIB)))
    srv = Server(args.server, transport)
    socks = []
    stop = threading.Event()
    try:
        m = Measure(srv)
        start = time.monotonic()
        for _ in range(n):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(30)
            s.connect(srv.addr)
            s.sendall(payload)
            socks.append(s)

        def reader(sock):
            sock.settimeout(1)
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    if not sock.recv(1024):
                        return
                except socket.timeout:
                    pass
                except OSError:
                    return
                stop.wait(max(0.0, 1024 / read_rate - (time.monotonic() - t0)))

        threads = [threading.Thread(target=reader, args=(s,)) for s in socks] if read_rate else []
        for t in threads:
            t.start()
        time.sleep(3.0)
        good = good_client(srv.addr)
        held = srv.rss()
        closed_at = None
        while time.monotonic() - start < 45:
            if closes(srv, "") >= n + 1:  # the good client's connection too
                closed_at = time.monotonic() - start
                break
            time.sleep(0.2)
        m.end()
        refused = closes(srv, "share of the memory budget") + closes(srv, "memory budget of")
        slow = closes(srv, "slower than the minimum")
        written = closes(srv, "accepted no answer bytes")
        stop.set()
        close_all(socks)
        socks = []
        for t in threads:
            t.join(5)
        time.sleep(2)
        kept = srv.rss()
        ended = (f"all closed by the server after {closed_at:.1f} s" if closed_at is not None
                 else "not all closed by the server after 45 s")
        row(name, transport, n * len(payload), srv, m,
            f"{mib(held)} held at 3 s, {mib(kept)} after", good,
            f"{mib(int((held - srv.base) / n))} held per client at 3 s; {refused} answers refused "
            f"(share full), {slow} clients closed as slow readers, {written} at the write "
            f"deadline; {ended}")
    finally:
        stop.set()
        close_all(socks)
        srv.stop()


def attack_never_read(args, transport):
    """6 clients send requests whose answers are large (about 15.6 MiB each) and never read."""
    large_answers(args, transport, "6 clients never read a 15.6 MiB answer", 0)


def attack_slow_read(args, transport):
    """6 clients read their 15.6 MiB answers at a steady 1 KiB/s."""
    large_answers(args, transport, "6 clients read a 15.6 MiB answer at 1 KiB/s", 1024)


def attack_idle_slots(args, transport):
    """Silent connections fill the connection cap (64 here, 512 by default)."""
    cap = 64
    srv = Server(args.server, transport, "--max-connections", str(cap))
    socks = []
    try:
        m = Measure(srv)
        socks = open_many(srv.addr, cap)
        time.sleep(0.5)
        good = good_client(srv.addr)
        m.end()
        row(f"{cap} silent sockets at a cap of {cap}", transport, 0, srv, m, srv.rss(), good,
            "first-byte deadline 10 s; at the cap the connection idle the longest is evicted")
    finally:
        close_all(socks)
        srv.stop()


def attack_idle_many(args, transport):
    """5,000 idle connections: CPU while idle, fds and threads per connection."""
    n = 5000
    srv = Server(args.server, transport, "--max-connections", str(n + 100))
    socks = []
    try:
        fds0, threads0 = srv.fds(), srv.threads()
        socks = open_many(srv.addr, n)
        time.sleep(2.0)
        m = Measure(srv)
        time.sleep(3.0)
        m.end()
        fds, threads = srv.fds(), srv.threads()
        good = good_client(srv.addr)
        if args.verbose:
            print(srv.log_text()[-3000:], file=sys.stderr)
        idle_pct = m.cpu / 3.0 * 100
        row(f"{n} idle connections", transport, 0, srv, m, srv.rss(), good,
            f"idle CPU {idle_pct:.1f}% (CPU column: 3 s idle); {(fds - fds0) / n:.2f} fds and "
            f"{(threads - threads0) / n:.2f} threads per connection")
    finally:
        close_all(socks)
        srv.stop()


def attack_forged_log(args, transport):
    """A content type carrying a forged log line, one with \\r, one of 60 KB; at --trace,
    where the demo logs the content type of each request (the default level does not)."""
    srv = Server(args.server, transport, "--trace")
    try:
        m = Measure(srv)
        forged = "text/json\n2030-01-01T00:00:00.000000Z ERROR forged: all data lost"
        sent = 0
        for ct in (forged, "text/json\rERROR carriage return", "x" * 60_000):
            payload = message(b'{"action": "search", "value": "ring"}', content_type=ct)
            sent += len(payload)
            with socket.create_connection(srv.addr, timeout=5) as s:
                s.sendall(payload)
                read_answer(s)
        time.sleep(0.5)
        m.end()
        text = srv.log_text()
        lines = text.splitlines()
        forged_lines = sum(1 for l in lines if l.startswith("2030-01-01"))
        raw_cr = "\rERROR" in text
        longest = max((len(l) for l in lines), default=0)
        row("content-type with \\n, \\r, 60 KB (--trace)", transport, sent, srv, m, None, "",
            f"forged lines: {forged_lines}; raw \\r: {'yes' if raw_cr else 'no'}; "
            f"longest log line {longest} B")
    finally:
        srv.stop()


def attack_log_volume(args, transport):
    """Log bytes per request at the default level: 200 guide requests, one connection each."""
    n = 200
    srv = Server(args.server, transport)
    try:
        m = Measure(srv)
        for _ in range(n):
            with socket.create_connection(srv.addr, timeout=5) as s:
                s.sendall(GOOD_REQUEST)
                read_answer(s)
        time.sleep(0.3)
        m.end()
        row("log per guide request (default level)", transport, n * len(GOOD_REQUEST), srv, m,
            None, "", f"{m.log / n:.0f} B of log per {len(GOOD_REQUEST)} B request "
            f"(one connection each)")
    finally:
        srv.stop()


# ---------------------------------------------------------------- app-client against a fake server

def fake_server(behaviour):
    """A one-connection server on 127.0.0.1 doing `behaviour(conn)`; returns its port."""
    ls = socket.socket()
    ls.bind((HOST, 0))
    ls.listen(1)
    ls.settimeout(30)

    def run():
        try:
            conn, _ = ls.accept()
        except OSError:
            return
        conn.settimeout(30)
        try:
            behaviour(conn)
        except OSError:
            pass
        finally:
            conn.close()
            ls.close()

    threading.Thread(target=run, daemon=True).start()
    return ls.getsockname()[1]


def read_request(conn):
    raw = recv_exact(conn, 2)
    (hlen,) = struct.unpack(">H", raw)
    header = json.loads(recv_exact(conn, hlen))
    recv_exact(conn, header["content-length"])


def answer_bytes():
    return message(json.dumps({"result": "Follow the white rabbit."}).encode())


def client_run(args, name, behaviour, timeout=3):
    port = fake_server(behaviour)
    start = time.monotonic()
    try:
        p = subprocess.run([args.client, HOST, str(port), "search", "morpheus", "--timeout",
                            str(timeout)], capture_output=True, timeout=40)
        took = time.monotonic() - start
        out = p.stdout.decode(errors="replace").strip()
        err = p.stderr.decode(errors="replace")
        failure = [l for l in err.splitlines() if l.startswith("app-client:")]
        forged = sum(1 for l in err.splitlines() if l.startswith("2030-01-01"))
        said = " ".join(x for x in (out[:80], failure[-1][:160] if failure else "") if x)
        note = f"exit {p.returncode}: {said}; forged log lines: {forged}"
    except subprocess.TimeoutExpired:
        took = time.monotonic() - start
        note = "still running at 40 s (killed)"
    row(name, "app-client", "", good=f"{took:.1f} s", note=note)


def attack_client(args):
    def drip(conn):
        read_request(conn)
        for b in answer_bytes():
            conn.sendall(bytes([b]))
            time.sleep(1.0)

    def trailing(conn):
        read_request(conn)
        conn.sendall(answer_bytes() + b"more bytes")
        time.sleep(15)

    def http(conn):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        time.sleep(15)

    def huge(conn):
        read_request(conn)
        conn.sendall(b"\xff\xff" + os.urandom(64))
        time.sleep(15)

    def forged(conn):
        read_request(conn)
        conn.sendall(message(b'{"result": "x"}', content_type="text/json\n2030-01-01 ERROR forged"))
        time.sleep(15)

    client_run(args, "answer dripped 1 byte/s (--timeout 3)", drip)
    client_run(args, "good answer, then more bytes", trailing)
    client_run(args, "an HTTP reply", http)
    client_run(args, "random bytes announcing a 64 KiB header", huge)
    client_run(args, "answer content-type with \\n (forged line)", forged)


ATTACKS = {
    "keys": attack_keys,
    "nested": attack_nested,
    "header": attack_big_header,
    "numbers": attack_numbers,
    "never-read": attack_never_read,
    "slow-read": attack_slow_read,
    "slots": attack_idle_slots,
    "idle": attack_idle_many,
    "forged-log": attack_forged_log,
    "log-volume": attack_log_volume,
}


def transports_of(server):
    """The transports `app-server` accepts, as its usage error for a bad one lists them."""
    p = subprocess.run([server, "--transport", "?"], capture_output=True, timeout=10)
    for line in p.stderr.decode(errors="replace").splitlines():
        if "possible values:" in line:
            return [v.strip() for v in line.split("possible values:")[1].strip(" ]").split(",")]
    return ["mio", "std"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--transport", action="append")
    ap.add_argument("--verbose", action="store_true", help="show server logs where useful")
    ap.add_argument("--only", action="append", help="attack names: " + ", ".join(ATTACKS) + ", client")
    args = ap.parse_args()
    transports = args.transport or transports_of(args.server)
    only = args.only or list(ATTACKS) + ["client"]
    start = time.monotonic()
    for name in only:
        if name == "client":
            print("attack: app-client against fake servers", file=sys.stderr, flush=True)
            attack_client(args)
            continue
        if name not in ATTACKS:
            ap.error(f"unknown attack {name!r}")
        for t in transports:
            print(f"attack: {name} on {t}", file=sys.stderr, flush=True)
            ATTACKS[name](args, t)
    cols = [("attack", "attack"), ("transport", "transport"), ("sent", "bytes sent"),
            ("base", "base RSS"), ("peak", "peak RSS"), ("kept", "kept RSS"),
            ("cpu", "server CPU"), ("good", "good client waited"), ("log", "log"),
            ("note", "notes")]
    print("| " + " | ".join(c[1] for c in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in ROWS:
        print("| " + " | ".join(str(r[c[0]]).replace("|", "\\|") for c in cols) + " |")
    print(f"\n({time.monotonic() - start:.0f} s in all)", file=sys.stderr)


if __name__ == "__main__":
    main()
