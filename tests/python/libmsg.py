"""Python peers of the message protocol of the Python sockets guide.

This module reconstructs, as faithfully as possible, the message code of the
guide's ``libserver.py`` and ``libclient.py`` (Real Python's "Socket
Programming in Python", from "Application Protocol Header" onwards; the
repository's ``PROTOCOL.md`` restates the format), so that the Rust
implementation can be tested against real guide peers byte for byte.

Wire format of one message::

    +----------------+----------------------------+---------------------------+
    | protoheader    | JSON header                | content                   |
    | 2 bytes        | protoheader bytes          | content-length bytes      |
    | u16 big-endian | UTF-8 JSON object          | JSON text or raw bytes    |
    +----------------+----------------------------+---------------------------+

Contents:

* module-level helpers shared by every peer (``_json_encode``,
  ``_json_decode``, ``_create_message``, the demo application's request and
  response builders, and a blocking reader for ``oneshot_server.py``);
* ``ServerMessage``: the guide's ``libserver.Message`` (one request per
  connection, answer, close);
* ``ClientMessage``: the guide's ``libclient.Message`` (queue one request,
  read one response, close).

Differences from the guide, all outside the protocol itself:

* log lines go to stderr (the guide prints them to stdout), so that stdout
  only carries the client's ``got result: ...`` / ``got response: ...`` line;
* the byte order written in the JSON header can be overridden (default
  ``sys.byteorder``, as in the guide) to reproduce PROTOCOL.md's examples;
* raw bytes received / sent can be appended to capture files;
* a ``close`` callback lets the main programs notice closed connections.

Standard library only.
"""

import io
import json
import selectors
import struct
import sys

# The guide's search table (libserver.py: ``request_search``).
request_search = {
    "morpheus": "Follow the white rabbit. \U0001f430",
    "ring": "In the caves beneath the Misty Mountains. \U0001f48d",
    "\U0001f436": "\U0001f43e Playing ball! \U0001f3d0",
}

# The JSON header keys every receiver requires (guide: process_jsonheader).
REQUIRED_HEADERS = (
    "byteorder",
    "content-length",
    "content-type",
    "content-encoding",
)

# Content types / encodings used by the guide's demo application.
JSON_CONTENT_TYPE = "text/json"
CLIENT_BINARY_TYPE = "binary/custom-client-binary-type"
SERVER_BINARY_TYPE = "binary/custom-server-binary-type"
BINARY_ENCODING = "binary"


def log(*args):
    """Print a log line to stderr (the guide prints these to stdout)."""
    print(*args, file=sys.stderr, flush=True)


def use_utf8_stdio():
    """Make stdout/stderr UTF-8 whatever the locale (emoji in results)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(encoding="utf-8")
        except (AttributeError, ValueError):
            pass


class Capture:
    """Appends raw bytes to a file (``--capture-in`` / ``--capture-out``).

    ``Capture(None)`` is a no-op, so callers never need to test for it.
    """

    def __init__(self, path):
        self._file = open(path, "ab") if path else None

    def write(self, data):
        if self._file is not None and data:
            self._file.write(data)
            self._file.flush()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


# ---------------------------------------------------------------------------
# Encoding helpers (identical in the guide's libserver.py and libclient.py)
# ---------------------------------------------------------------------------


def _json_encode(obj, encoding):
    # Guide: json.dumps(obj, ensure_ascii=False).encode(encoding). This fixes
    # the canonical bytes: ", " and ": " separators, raw non-ASCII characters.
    return json.dumps(obj, ensure_ascii=False).encode(encoding)


def _json_decode(json_bytes, encoding):
    # Guide: decode through a TextIOWrapper, then json.load.
    tiow = io.TextIOWrapper(io.BytesIO(json_bytes), encoding=encoding, newline="")
    obj = json.load(tiow)
    tiow.close()
    return obj


def _create_message(content_bytes, content_type, content_encoding, byteorder=None):
    """Frame ``content_bytes``: protoheader + JSON header + content.

    Guide: the JSON header dict is built in the order byteorder, content-type,
    content-encoding, content-length, and prefixed with its length as an
    unsigned 16-bit big-endian integer. ``byteorder`` defaults to
    ``sys.byteorder`` like in the guide; tests may override it.
    """
    jsonheader = {
        "byteorder": sys.byteorder if byteorder is None else byteorder,
        "content-type": content_type,
        "content-encoding": content_encoding,
        "content-length": len(content_bytes),
    }
    jsonheader_bytes = _json_encode(jsonheader, "utf-8")
    message_hdr = struct.pack(">H", len(jsonheader_bytes))
    message = message_hdr + jsonheader_bytes + content_bytes
    return message


def _check_required_headers(jsonheader):
    # Guide: process_jsonheader raises on a missing required header.
    for reqhdr in REQUIRED_HEADERS:
        if reqhdr not in jsonheader:
            raise ValueError(f'Missing required header "{reqhdr}".')


# ---------------------------------------------------------------------------
# The demo application
# ---------------------------------------------------------------------------


def create_request(action, value, json_action=False):
    """The guide's app-client.py ``create_request``.

    ``search`` gives a text/json request; any other action a binary request
    whose content is ``action + value`` in UTF-8. ``json_action=True`` (not in
    the guide) sends a text/json request whatever the action, so tests can
    provoke the server's ``Error: invalid action`` answer.
    """
    if action == "search" or json_action:
        return dict(
            type=JSON_CONTENT_TYPE,
            encoding="utf-8",
            content=dict(action=action, value=value),
        )
    else:
        return dict(
            type=CLIENT_BINARY_TYPE,
            encoding=BINARY_ENCODING,
            content=bytes(action + value, encoding="utf-8"),
        )


def request_message_kwargs(request):
    """Guide: the first half of libclient's ``queue_request``."""
    content = request["content"]
    content_type = request["type"]
    content_encoding = request["encoding"]
    if content_type == JSON_CONTENT_TYPE:
        req = {
            "content_bytes": _json_encode(content, content_encoding),
            "content_type": content_type,
            "content_encoding": content_encoding,
        }
    else:
        req = {
            "content_bytes": content,
            "content_type": content_type,
            "content_encoding": content_encoding,
        }
    return req


def _create_response_json_content(request):
    # Guide: libserver's _create_response_json_content.
    action = request.get("action")
    if action == "search":
        query = request.get("value")
        answer = request_search.get(query) or f'No match for "{query}".'
        content = {"result": answer}
    else:
        content = {"result": f'Error: invalid action "{action}".'}
    content_encoding = "utf-8"
    response = {
        "content_bytes": _json_encode(content, content_encoding),
        "content_type": JSON_CONTENT_TYPE,
        "content_encoding": content_encoding,
    }
    return response


def _create_response_binary_content(request):
    # Guide: libserver's _create_response_binary_content.
    response = {
        "content_bytes": b"First 10 bytes of request: " + request[:10],
        "content_type": SERVER_BINARY_TYPE,
        "content_encoding": BINARY_ENCODING,
    }
    return response


def create_response_kwargs(jsonheader, request):
    """Guide: the first half of libserver's ``create_response``."""
    if jsonheader["content-type"] == JSON_CONTENT_TYPE:
        return _create_response_json_content(request)
    else:
        # Binary or unknown content-type
        return _create_response_binary_content(request)


def decode_content(jsonheader, data):
    """Guide: text/json content is JSON-decoded, anything else stays bytes."""
    if jsonheader["content-type"] == JSON_CONTENT_TYPE:
        return _json_decode(data, jsonheader["content-encoding"])
    return data


# ---------------------------------------------------------------------------
# Blocking reader (not in the guide; used by oneshot_server.py)
# ---------------------------------------------------------------------------


def recv_message_blocking(sock, capture=None):
    """Read one message from a blocking socket with the guide's framing.

    Returns ``(jsonheader, content)`` where content is decoded as the guide
    does (JSON value for text/json, bytes otherwise). Bytes received past the
    end of the message are discarded (one request per connection).
    """
    capture = capture or Capture(None)
    buf = b""

    def fill(n, part):
        nonlocal buf
        while len(buf) < n:
            data = sock.recv(4096)
            if not data:
                raise RuntimeError(
                    f"Peer closed. ({part}: {n - len(buf)} bytes missing)"
                )
            capture.write(data)
            buf += data

    fill(2, "protoheader")
    jsonheader_len = struct.unpack(">H", buf[:2])[0]
    fill(2 + jsonheader_len, "JSON header")
    jsonheader = _json_decode(buf[2 : 2 + jsonheader_len], "utf-8")
    _check_required_headers(jsonheader)
    start = 2 + jsonheader_len
    content_len = jsonheader["content-length"]
    fill(start + content_len, "content")
    data = buf[start : start + content_len]
    return jsonheader, decode_content(jsonheader, data)


# ---------------------------------------------------------------------------
# The guide's Message classes
# ---------------------------------------------------------------------------


class _Message:
    """What libserver.Message and libclient.Message have in common."""

    def __init__(
        self,
        selector,
        sock,
        addr,
        *,
        byteorder=None,
        capture_in=None,
        capture_out=None,
        on_close=None,
    ):
        self.selector = selector
        self.sock = sock
        self.addr = addr
        self._recv_buffer = b""
        self._send_buffer = b""
        self._jsonheader_len = None
        self.jsonheader = None
        # Not in the guide: header byte order override, captures, callback.
        self.byteorder = byteorder
        self._capture_in = capture_in or Capture(None)
        self._capture_out = capture_out or Capture(None)
        self._on_close = on_close
        self.closed = False

    def _set_selector_events_mask(self, mode):
        """Set selector to listen for events: mode is 'r', 'w', or 'rw'."""
        if mode == "r":
            events = selectors.EVENT_READ
        elif mode == "w":
            events = selectors.EVENT_WRITE
        elif mode == "rw":
            events = selectors.EVENT_READ | selectors.EVENT_WRITE
        else:
            raise ValueError(f"Invalid events mask mode {mode!r}.")
        self.selector.modify(self.sock, events, data=self)

    def _read(self):
        try:
            # Should be ready to read
            data = self.sock.recv(4096)
        except BlockingIOError:
            # Resource temporarily unavailable (errno EWOULDBLOCK)
            pass
        else:
            if data:
                self._capture_in.write(data)
                self._recv_buffer += data
            else:
                raise RuntimeError("Peer closed.")

    def _send(self):
        # The common part of the guide's two _write methods: one send() of the
        # buffer; returns the number of bytes sent (0 if it would block).
        log("sending", repr(self._send_buffer), "to", self.addr)
        try:
            # Should be ready to write
            sent = self.sock.send(self._send_buffer)
        except BlockingIOError:
            # Resource temporarily unavailable (errno EWOULDBLOCK)
            return 0
        self._capture_out.write(self._send_buffer[:sent])
        self._send_buffer = self._send_buffer[sent:]
        return sent

    def _json_encode(self, obj, encoding):
        return _json_encode(obj, encoding)

    def _json_decode(self, json_bytes, encoding):
        return _json_decode(json_bytes, encoding)

    def _create_message(self, *, content_bytes, content_type, content_encoding):
        return _create_message(
            content_bytes, content_type, content_encoding, self.byteorder
        )

    def process_events(self, mask):
        if mask & selectors.EVENT_READ:
            self.read()
        if mask & selectors.EVENT_WRITE:
            self.write()

    def close(self):
        if self.closed:
            # Not in the guide: a second close() (e.g. from the main loop's
            # error handler) would only log unregister/close errors.
            return
        log("closing connection to", self.addr)
        try:
            self.selector.unregister(self.sock)
        except Exception as e:
            log(f"error: selector.unregister() exception for {self.addr}: {e!r}")

        try:
            self.sock.close()
        except OSError as e:
            log(f"error: socket.close() exception for {self.addr}: {e!r}")
        finally:
            # Delete reference to socket object for garbage collection
            self.sock = None
        self.closed = True
        if self._on_close is not None:
            self._on_close(self)

    def process_protoheader(self):
        hdrlen = 2
        if len(self._recv_buffer) >= hdrlen:
            self._jsonheader_len = struct.unpack(">H", self._recv_buffer[:hdrlen])[0]
            self._recv_buffer = self._recv_buffer[hdrlen:]

    def process_jsonheader(self):
        hdrlen = self._jsonheader_len
        if len(self._recv_buffer) >= hdrlen:
            self.jsonheader = self._json_decode(self._recv_buffer[:hdrlen], "utf-8")
            self._recv_buffer = self._recv_buffer[hdrlen:]
            _check_required_headers(self.jsonheader)


class ServerMessage(_Message):
    """The guide's ``libserver.Message``: one request, one response, close."""

    def __init__(self, selector, sock, addr, **kwargs):
        super().__init__(selector, sock, addr, **kwargs)
        self.request = None
        self.response_created = False

    def _write(self):
        if self._send_buffer:
            sent = self._send()
            # Close when the buffer is drained. The response has been sent.
            if sent and not self._send_buffer:
                self.close()

    def read(self):
        self._read()

        if self._jsonheader_len is None:
            self.process_protoheader()

        if self._jsonheader_len is not None:
            if self.jsonheader is None:
                self.process_jsonheader()

        if self.jsonheader:
            if self.request is None:
                self.process_request()

    def write(self):
        # Faithful quirk: a falsy request (empty binary content, or a JSON
        # value such as {} or []) is never answered; the guide's server then
        # keeps the connection open, polling for write events, forever.
        if self.request:
            if not self.response_created:
                self.create_response()

        self._write()

    def process_request(self):
        content_len = self.jsonheader["content-length"]
        if not len(self._recv_buffer) >= content_len:
            return
        data = self._recv_buffer[:content_len]
        self._recv_buffer = self._recv_buffer[content_len:]
        if self.jsonheader["content-type"] == JSON_CONTENT_TYPE:
            encoding = self.jsonheader["content-encoding"]
            self.request = self._json_decode(data, encoding)
            log("received request", repr(self.request), "from", self.addr)
        else:
            # Binary or unknown content-type
            self.request = data
            log(f'received {self.jsonheader["content-type"]} request from', self.addr)
        # Set selector to listen for write events, we're done reading.
        self._set_selector_events_mask("w")

    def create_response(self):
        response = create_response_kwargs(self.jsonheader, self.request)
        message = self._create_message(**response)
        self.response_created = True
        self._send_buffer += message


class ClientMessage(_Message):
    """The guide's ``libclient.Message``: queue a request, read the response.

    ``result_line`` is what the guide prints for the response
    (``got result: ...`` or ``got response: ...``); ``out`` is where it is
    printed (stdout by default).
    """

    def __init__(self, selector, sock, addr, request, *, out=None, **kwargs):
        super().__init__(selector, sock, addr, **kwargs)
        self.request = request
        self._request_queued = False
        self.response = None
        self.result_line = None
        self._out = out if out is not None else sys.stdout

    def _write(self):
        if self._send_buffer:
            self._send()

    def read(self):
        self._read()

        if self._jsonheader_len is None:
            self.process_protoheader()

        if self._jsonheader_len is not None:
            if self.jsonheader is None:
                self.process_jsonheader()

        if self.jsonheader:
            if self.response is None:
                self.process_response()

    def write(self):
        if not self._request_queued:
            self.queue_request()

        self._write()

        if self._request_queued:
            if not self._send_buffer:
                # Set selector to listen for read events, we're done writing.
                self._set_selector_events_mask("r")

    def queue_request(self):
        req = request_message_kwargs(self.request)
        message = self._create_message(**req)
        self._send_buffer += message
        self._request_queued = True

    def _print_result(self, line):
        self.result_line = line
        print(line, file=self._out, flush=True)

    def _process_response_json_content(self):
        content = self.response
        result = content.get("result")
        self._print_result(f"got result: {result}")

    def _process_response_binary_content(self):
        content = self.response
        self._print_result(f"got response: {content!r}")

    def process_response(self):
        content_len = self.jsonheader["content-length"]
        if not len(self._recv_buffer) >= content_len:
            return
        data = self._recv_buffer[:content_len]
        self._recv_buffer = self._recv_buffer[content_len:]
        if self.jsonheader["content-type"] == JSON_CONTENT_TYPE:
            encoding = self.jsonheader["content-encoding"]
            self.response = self._json_decode(data, encoding)
            log("received response", repr(self.response), "from", self.addr)
            self._process_response_json_content()
        else:
            # Binary or unknown content-type
            self.response = data
            log(f'received {self.jsonheader["content-type"]} response from', self.addr)
            self._process_response_binary_content()
        # Close when response has been processed
        self.close()
