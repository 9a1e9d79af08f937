#!/usr/bin/env python3
"""Regenerates the conformance vectors of tests/vectors/ and the fuzz seeds made from them.

    python3 tests/vectors/gen.py

Writes tests/vectors/<name>.bin for every vector below, tests/vectors/README.md (the list
of vectors, from the descriptions here), fuzz/seeds/decode_stream/<name> (the stream behind
two control bytes, for vectors up to 8 KiB), fuzz/seeds/json_header/<name> (the JSON
header of the first message, where there is one) and a few fuzz/seeds/{roundtrip,connection}
byte strings. It does NOT write expected.txt: the
expected verdicts are written by hand from PROTOCOL.md and reviewed, and the test
(tests/tests/vectors.rs) diffs the decoder against them.

Python 3 standard library only. Headers are built the guide's way,
json.dumps(header, ensure_ascii=False).encode("utf-8"), unless a vector needs other bytes.
"""

import json
import os
import random
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")

VECTORS = []  # (name, bytes, description)


def vector(name, data, description):
    assert all(n != name for n, _, _ in VECTORS), name
    VECTORS.append((name, bytes(data), description))


def randbytes(seed, n):
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(n))


def randchoice(seed, alphabet, n):
    rng = random.Random(seed)
    return bytes(rng.choice(alphabet) for _ in range(n))


def frame(header, content=b""):
    """Protoheader (u16 big-endian length of `header`), header bytes, content."""
    if isinstance(header, str):
        header = header.encode("utf-8")
    return struct.pack(">H", len(header)) + header + content


def header(pairs):
    """The guide's header bytes for an ordered list of (key, value)."""
    return json.dumps(dict(pairs), ensure_ascii=False).encode("utf-8")


def std_pairs(content_length, content_type="text/json", content_encoding="utf-8", byteorder="little"):
    return [
        ("byteorder", byteorder),
        ("content-type", content_type),
        ("content-encoding", content_encoding),
        ("content-length", content_length),
    ]


def json_message(obj, byteorder="little"):
    content = json.dumps(obj, ensure_ascii=False).encode("utf-8")
    return frame(header(std_pairs(len(content), byteorder=byteorder)), content)


def binary_message(content_type, content):
    return frame(header(std_pairs(len(content), content_type, "binary")), content)


def with_key(key, value, drop=False, raw=None):
    """A search request whose header has `key` set to `value` (or dropped, or `raw` JSON)."""
    content = b'{"action": "search", "value": "morpheus"}'
    parts = []
    for k, v in std_pairs(len(content)):
        if k == key:
            if drop:
                continue
            if raw is not None:
                parts.append('"%s": %s' % (k, raw))
                continue
            v = value
        parts.append("%s: %s" % (json.dumps(k), json.dumps(v, ensure_ascii=False)))
    return frame("{" + ", ".join(parts) + "}", content)


# ---- The worked examples of PROTOCOL.md, byte for byte ----------------------------------

SEARCH = (b'\x00g{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", '
          b'"content-length": 41}{"action": "search", "value": "morpheus"}')
RESULT = (b'\x00g{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", '
          b'"content-length": 43}{"result": "Follow the white rabbit. \xf0\x9f\x90\xb0"}')
DOG = (b'\x00d{"byteorder": "big", "content-type": "text/json", "content-encoding": "utf-8", '
       b'"content-length": 37}{"action": "search", "value": "\xf0\x9f\x90\xb6"}')
BIN_REQ = (b'\x00~{"byteorder": "little", "content-type": "binary/custom-client-binary-type", '
           b'"content-encoding": "binary", "content-length": 9}binary\xe2\x98\xba')
BIN_RESP = (b'\x00\x7f{"byteorder": "little", "content-type": "binary/custom-server-binary-type", '
            b'"content-encoding": "binary", "content-length": 36}First 10 bytes of request: binary\xe2\x98\xba')
assert SEARCH == json_message({"action": "search", "value": "morpheus"})
assert len(SEARCH) == 146 and len(RESULT) == 148 and len(DOG) == 139

vector("ok-search-request", SEARCH, "PROTOCOL.md: the search request (146 bytes).")
vector("ok-search-response", RESULT, "PROTOCOL.md: its response, non-ASCII content.")
vector("ok-dog-request", DOG, "PROTOCOL.md: a big-endian client's request.")
vector("ok-binary-request", BIN_REQ, "PROTOCOL.md: a binary request.")
vector("ok-binary-response", BIN_RESP, "PROTOCOL.md: a binary response.")
vector("ok-five-in-one-buffer", SEARCH + RESULT + DOG + BIN_REQ + BIN_RESP,
       "Several messages in one buffer: the five examples back to back.")

# ---- Valid edge cases --------------------------------------------------------------------

vector("ok-empty-stream", b"", "No bytes at all, then end of stream: a clean end, no message.")
vector("ok-empty-binary-content", binary_message("binary/custom-client-binary-type", b""),
       "content-length 0 with binary content: an empty message.")
vector("ok-extra-header-keys",
       frame(header(std_pairs(2) + [("x-request-id", 7), ("trace", {"hops": [1, 2], "ok": True}),
                                    ("note", None)]), b"{}"),
       "Extra header keys (number, object, null) after the required ones: kept, not refused.")
vector("ok-extra-keys-first",
       frame(header([("x", "first")] + std_pairs(2)), b"[]"),
       "An extra key before the required ones.")
vector("ok-key-order-reversed", frame(header(list(reversed(std_pairs(2)))), b"{}"),
       "The four required keys in reverse order.")
vector("ok-whitespace",
       frame(' \t\r\n{\n\t"byteorder" :\t"little" ,\r\n "content-type":"text/json",'
             '"content-encoding"  :  "utf-8",\n"content-length"\n:\n2\n}\r\n\t ', b"{}"),
       "Every kind of JSON whitespace, before, inside and after the header object.")
vector("ok-compact-separators",
       frame(json.dumps(dict(std_pairs(2)), separators=(",", ":")), b"{}"),
       "No whitespace at all (json.dumps with compact separators).")
vector("ok-duplicate-keys",
       frame('{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", '
             '"content-length": 999, "content-length": 2}', b"{}"),
       "A required key twice: the last value counts, as in Python's json.loads.")
vector("ok-escaped-key-names",
       frame('{"byte\\u006frder": "little", "content\\u002dtype": "text\\/json", '
             '"content-encoding": "utf-8", "content-length": 2}', b"{}"),
       "Key names and values written with JSON escapes (\\u006f, \\u002d, \\/).")
vector("ok-utf8-label-variant", frame(header(std_pairs(2, content_encoding="UTF8")), b"{}"),
       'text/json with content-encoding "UTF8": a label Python resolves to UTF-8.')
vector("ok-binary-not-utf8-content",
       binary_message("binary/custom-client-binary-type", b"\xff\xfe\x00\x80binary"),
       "Binary content that is not UTF-8: binary content is never decoded.")
vector("ok-unknown-encoding-binary",
       frame(header(std_pairs(3, "application/octet-stream", "gzip")), b"\x1f\x8b\x08"),
       "Unknown content-type and content-encoding: raw bytes, accepted.")
vector("ok-non-ascii-header",
       frame(header(std_pairs(4, "binary/\u00fc\u263a", "binary") + [("n\u00f6te", "\U0001f436")]),
             b"\x00\x01\x02\x03"),
       "Raw non-ASCII UTF-8 in header keys and values.")
vector("ok-json-content-scalar", frame(header(std_pairs(14)), b'"just a text" '),
       "JSON content that is a string with trailing whitespace: any JSON value is content.")
vector("ok-content-depth-32", frame(header(std_pairs(64)), b"[" * 32 + b"]" * 32),
       "JSON content nested exactly 32 deep: the default limit, accepted.")
vector("ok-header-depth-32",
       frame('{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", '
             '"content-length": 2, "deep": ' + "[" * 31 + "]" * 31 + "}", b"{}"),
       "A header nested exactly 32 deep (the object is level 1): accepted.")
vector("ok-brackets-in-strings",
       frame(header(std_pairs(12) + [("x", "[[[[{{{{" * 20)]), b'"[[[[[[[[[["'),
       "Brackets inside strings do not count as nesting, in the header or in the content.")

# A header of exactly 65,535 bytes, the largest a protoheader can announce.
def padded_header(total, pairs):
    base = header(pairs + [("padding", "")])
    pad = total - len(base)
    assert pad >= 0
    out = header(pairs + [("padding", "x" * pad)])
    assert len(out) == total, len(out)
    return out


H65535 = padded_header(65535, std_pairs(2))
vector("ok-header-65535", frame(H65535, b"{}"),
       "A valid JSON header of exactly 65,535 bytes (a long extra key): the format's maximum.")

# ---- Invalid: required keys --------------------------------------------------------------

for key in ["byteorder", "content-type", "content-encoding", "content-length"]:
    vector("err-missing-" + key, with_key(key, None, drop=True),
           "The search request without its %r key." % key)
for key in ["byteorder", "content-type", "content-encoding", "content-length"]:
    vector("err-null-" + key, with_key(key, None), "%r is null." % key)
vector("err-content-length-string", with_key("content-length", "41"),
       'A number as a string: "content-length": "41".')
vector("err-byteorder-number", with_key("byteorder", 1), 'A string as a number: "byteorder": 1.')
vector("err-content-type-number", with_key("content-type", 7), '"content-type": 7.')
vector("err-content-encoding-number", with_key("content-encoding", 8), '"content-encoding": 8.')
vector("err-content-type-array", with_key("content-type", ["text/json"]), '"content-type": ["text/json"].')
vector("err-content-length-bool", with_key("content-length", True), '"content-length": true.')
vector("err-content-length-object", with_key("content-length", {"n": 41}), '"content-length": {"n": 41}.')
vector("err-byteorder-invalid", with_key("byteorder", "middle"), '"byteorder": "middle".')
vector("err-byteorder-case", with_key("byteorder", "Little"), '"byteorder": "Little" (values are case-sensitive).')

# ---- Invalid: content-length -------------------------------------------------------------

vector("err-content-length-negative", with_key("content-length", None, raw="-1"), '"content-length": -1.')
vector("err-content-length-fractional", with_key("content-length", None, raw="41.5"), '"content-length": 41.5.')
vector("err-content-length-float-integral", with_key("content-length", None, raw="41.0"),
       '"content-length": 41.0 (a float, even with no fraction).')
vector("err-content-length-exponent", with_key("content-length", None, raw="4.1e1"), '"content-length": 4.1e1.')
vector("err-content-length-2pow64", with_key("content-length", None, raw="18446744073709551616"),
       '"content-length": 2^64: does not fit 64 bits.')
vector("err-content-length-u64-max", with_key("content-length", None, raw="18446744073709551615"),
       '"content-length": 2^64 - 1: fits, but far over the limit.')
vector("err-content-length-over-limit", with_key("content-length", None, raw="16777217"),
       '"content-length": 16 MiB + 1, one over the default limit; refused before any content.')
vector("err-content-length-huge-negative", with_key("content-length", None, raw="-9223372036854775809"),
       '"content-length": -(2^63 + 1): negative and beyond 64 bits.')
vector("err-content-length-leading-zero", with_key("content-length", None, raw="041"),
       '"content-length": 041: not JSON.')
vector("err-content-over-custom-limit", SEARCH,
       "The search request (41 content bytes) under a configured max_content_len of 40.")

# ---- Invalid: the header's length and bytes ----------------------------------------------

vector("err-header-len-0", frame(b"", b"{}"), "Protoheader 0: an empty header is not JSON.")
vector("err-header-len-65535-missing-keys", frame(padded_header(65535, []), b""),
       "65,535 declared and 65,535 bytes of valid JSON that is not a valid header (no required key).")
vector("err-header-len-65535-over-limit", frame(H65535, b"{}"),
       "The valid 65,535-byte header under a configured max_header_len of 1,024: refused at the protoheader.")
vector("err-header-not-utf8",
       frame(header(std_pairs(2)).replace(b"text/json", b"text/\xffjson"), b"{}"),
       "A 0xFF byte inside the header's content-type value.")
vector("err-header-overlong-utf8",
       frame(header(std_pairs(2)).replace(b"little", b"l\xc0\xafttle"), b"{}"),
       "An overlong UTF-8 encoding (C0 AF) in the header.")
vector("err-header-bom", frame(b"\xef\xbb\xbf" + header(std_pairs(2)), b"{}"),
       "A UTF-8 byte-order mark before the header: not JSON (Python's json.loads refuses it too).")
vector("err-header-not-json", frame(b"byteorder=little; content-length=2", b"{}"), "A header that is not JSON.")
vector("err-header-trailing-garbage", frame(header(std_pairs(2)) + b" x", b"{}"),
       "A valid header object followed by another token.")
vector("err-header-two-objects", frame(header(std_pairs(2)) + b"{}", b"{}"),
       "Two JSON objects in one header.")
vector("err-header-truncated-json", frame(header(std_pairs(2))[:-1], b"{}"),
       "The header object without its closing brace (protoheader matches).")
vector("err-header-array", frame(b'["byteorder", "little"]', b""), "The header is a JSON array.")
vector("err-header-string", frame(b'"byteorder"', b""), "The header is a JSON string.")
vector("err-header-number", frame(b"41", b""), "The header is a JSON number.")
vector("err-header-null", frame(b"null", b""), "The header is JSON null.")
vector("err-header-deep-nesting",
       frame('{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", '
             '"content-length": 2, "deep": ' + "[" * 32 + "]" * 32 + "}", b"{}"),
       "A header nested 33 deep (one over the default 32) inside an extra key.")
vector("err-header-deep-nesting-10000", frame(b"[" * 10000), "10,000 open brackets as a header: refused before parsing.")
vector("err-protoheader-too-short",
       struct.pack(">H", 50) + SEARCH[2:],
       "The protoheader announces 50 bytes, the header is longer: the cut header is not JSON.")
vector("err-protoheader-too-long",
       struct.pack(">H", 110) + SEARCH[2:],
       "The protoheader announces 110 bytes: the header swallows 7 content bytes.")

# ---- Invalid: content --------------------------------------------------------------------

vector("err-content-invalid-json", frame(header(std_pairs(17)), b'{"action": search'), "text/json content that is not JSON.")
vector("err-content-trailing-garbage", frame(header(std_pairs(10)), b'{"a": 1} x'), "JSON content followed by another token.")
vector("err-content-empty-json", frame(header(std_pairs(0)), b""), "text/json with content-length 0: empty text is not JSON.")
vector("err-content-not-utf8", frame(header(std_pairs(11)), b'{"a": "\xff\xfe"}'),
       "text/json utf-8 content with bytes that are not UTF-8.")
LATIN1 = '{"a": "\u00e9"}'.encode("latin-1")
vector("err-content-encoding-unsupported",
       frame(header(std_pairs(len(LATIN1), content_encoding="latin-1")), LATIN1),
       "text/json declared latin-1: an encoding this implementation does not decode.")
vector("err-content-encoding-utf16",
       frame(header(std_pairs(4, content_encoding="utf-16")), "{}".encode("utf-16-le")),
       "text/json declared utf-16.")
vector("err-content-deep-nesting", frame(header(std_pairs(66)), b"[" * 33 + b"]" * 33),
       "JSON content nested 33 deep, one over the default limit.")
vector("err-content-deep-nesting-20000", frame(header(std_pairs(20000)), b"[" * 20000),
       "20,000 open brackets as JSON content: refused without recursing.")
vector("err-content-length-too-short",
       frame(header(std_pairs(20)), b'{"action": "search", "value": "morpheus"}'),
       "content-length 20 for 41 bytes of JSON: the content is cut, and is not JSON.")

# ---- Invalid: the stream ends inside a message (a cut in each phase) ---------------------

vector("err-cut-in-protoheader", SEARCH[:1], "Only the first protoheader byte, then end of stream.")
vector("err-cut-after-protoheader", SEARCH[:2], "The protoheader and nothing else.")
vector("err-cut-in-header", SEARCH[:50], "Cut 48 bytes into the 103-byte header.")
vector("err-cut-after-header", SEARCH[:105], "Protoheader and header, none of the 41 content bytes.")
vector("err-cut-in-content", SEARCH[:140], "Cut 6 bytes before the end of the content.")
vector("err-cut-in-second-protoheader", SEARCH + RESULT[:1], "A whole message, then one byte of the next.")
vector("err-cut-in-second-content", SEARCH + RESULT[:120], "A whole message, then the next cut in its content.")
vector("err-cut-in-large-content", frame(header(std_pairs(5000, "binary/x", "binary")), b"z" * 4000),
       "Binary content of 5,000 bytes cut after 4,000.")

# ---- Invalid: garbage and mixtures -------------------------------------------------------

vector("err-garbage-http", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
       "An HTTP request: 'GE' announces an 18,245-byte header that never comes.")
vector("err-garbage-tls", bytes.fromhex("160301") + b"\x00\xa5" + randbytes(443, 165),
       "A TLS ClientHello-like record: 0x1603 announces 5,635 header bytes that never come.")
vector("err-garbage-zeros", b"\x00" * 64, "64 zero bytes: an empty header.")
vector("err-garbage-ff", b"\xff" * 64, "64 0xFF bytes: a 65,535-byte header, cut short.")
vector("err-garbage-random-header", b"\x00\x40" + randbytes(5, 200),
       "A 64-byte header of random bytes (seeded): not UTF-8.")
vector("err-garbage-random-ascii",
       b"\x00\x30" + randchoice(6, b'{}[]",:0123456789 abcdefnulltrue', 60),
       "A 48-byte header of random JSON-ish ASCII (seeded): not JSON.")
vector("err-bad-after-good", SEARCH + with_key("byteorder", None, drop=True),
       "A good message, then one missing a key: one message, then the error.")
vector("err-good-after-bad", with_key("content-type", None, drop=True) + SEARCH,
       "A bad message, then a good one: the stream is refused at the first; nothing after it is read.")
vector("err-bad-content-between-good", SEARCH + frame(header(std_pairs(3)), b"{{{") + RESULT,
       "Good, bad JSON content, good: one message, then the error.")


def main():
    for name in os.listdir(HERE):
        if name.endswith(".bin"):
            os.remove(os.path.join(HERE, name))
    for sub in ["decode_stream", "json_header"]:
        d = os.path.join(SEEDS, sub)
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):
            if name.startswith("vec-"):
                os.remove(os.path.join(d, name))
    for name, data, _ in VECTORS:
        with open(os.path.join(HERE, name + ".bin"), "wb") as f:
            f.write(data)
        if len(data) <= 8192:
            with open(os.path.join(SEEDS, "decode_stream", "vec-" + name), "wb") as f:
                f.write(b"\x00\x00" + data)
        if len(data) >= 2:
            (hlen,) = struct.unpack(">H", data[:2])
            if hlen <= 8192:
                with open(os.path.join(SEEDS, "json_header", "vec-" + name), "wb") as f:
                    f.write(data[2:2 + hlen])
    # roundtrip and connection read their input through `arbitrary`: any bytes make some
    # message or operation sequence. Seed them with a few structured-looking byte strings.
    for sub in ["roundtrip", "connection"]:
        d = os.path.join(SEEDS, sub)
        os.makedirs(d, exist_ok=True)
        for name, data in [("search", SEARCH), ("five", SEARCH + RESULT + DOG + BIN_REQ + BIN_RESP),
                           ("zeros", b"\x00" * 64), ("ones", b"\xff" * 64),
                           ("counting", bytes(range(256))), ("random", randbytes(7, 512))]:
            with open(os.path.join(d, "gen-" + name), "wb") as f:
                f.write(data)
    with open(os.path.join(HERE, "README.md"), "w", encoding="utf-8") as f:
        f.write(README_HEAD)
        for name, data, desc in VECTORS:
            f.write("| `%s` | %d | %s |\n" % (name, len(data), desc.replace("|", "\\|")))
    print("%d vectors (%d valid, %d invalid)" % (
        len(VECTORS), sum(n.startswith("ok-") for n, _, _ in VECTORS),
        sum(n.startswith("err-") for n, _, _ in VECTORS)))


README_HEAD = """# Conformance vectors

Hostile and edge-case inputs for the receive side of the protocol (PROTOCOL.md), each a
byte stream in `<name>.bin`. `expected.txt` gives the verdict for each, written by hand from
the spec: `ok N` (N messages, then a clean end of stream) or `err KIND PHASE DETAIL...`
(the `Error::kind()` name, the phase, the fields that locate it, and `after=N` when N
messages came before the error). A `[key=value ...]` column sets non-default `Limits` for
that vector.

`tests/tests/vectors.rs` decodes every vector whole, one byte at a time, and split in two at
every position (capped at 512 positions for the few vectors over 4 KiB), through each of the
decoder's three doors (`decode`, `receive`/`next_event`, `read_buf`/`commit`), then ends the
stream; every way must give the same messages and the same verdict, and that verdict must be
the one in `expected.txt`. Set `SOCKMSG_BLESS=1` to rewrite the verdicts from the decoder
(then review the diff: the point of the file is that a person agreed with it).

Notes:

* "Header length 65,535": `ok-header-65535` is a valid header of exactly 65,535 bytes;
  `err-header-len-65535-missing-keys` is 65,535 bytes of valid JSON that is no header; and
  `err-header-len-65535-over-limit` is the valid one under a test limit of 1,024 bytes,
  refused at the protoheader before any header byte is buffered.
* "A cut in each phase": the `err-cut-*` vectors end the stream inside the protoheader,
  the header and the content (and at each phase boundary); the verdict names the phase and
  how many bytes were missing.
* Over-limit lengths (`content-length` over 16 MiB, 2^64, ...) are refused when the header
  is parsed, before any content byte is awaited or allocated.

Regenerate the `.bin` files (and the fuzz seeds made from them) with
`python3 tests/vectors/gen.py`.

| vector | bytes | what it is |
|---|---|---|
"""

if __name__ == "__main__":
    main()
