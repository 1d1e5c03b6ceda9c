"""Sends random HTTP/1.1 requests, pipelined, on one connection, cut at
random points into separate sends, then reads every response. Bodies are
drawn from bytes that look like HTTP framing (CR, LF, colons, digits,
"GET", "HTTP/1.1"); Content-Length and chunked bodies (random chunk sizes,
extensions, trailers) and bodiless requests are mixed, header names in
random case. Prints each response body (testdata/inject/echo.py's JSON)
on a line, then one line: {"expect": [...]} with what each request sent.

usage: splits.py SEED HOST PORT REQUESTS

(Not named random.py: next to echo.py it would shadow the module.)
"""
import json
import random
import socket
import sys

from responses import print_bodies

seed, host, port, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
ALPHABET = b"\r\n:; \tab0123456789GETPOSTHTTP/1.1\x00\xff"


def rand_case(name):
    return bytes(c ^ 0x20 if 97 <= c <= 122 and rng.random() < 0.5 else c for c in name)


def chunked(body):
    out, i = b"", 0
    while i < len(body):
        k = rng.randint(1, 700)
        ext = b";x=y" if rng.random() < 0.2 else b""
        out += b"%x%s\r\n" % (len(body[i:i + k]), ext) + body[i:i + k] + b"\r\n"
        i += k
    trailer = b"X-Trailer: t\r\n" if rng.random() < 0.3 else b""
    return out + b"0\r\n" + trailer + b"\r\n"


stream, expect = b"", []
for i in range(n):
    path = b"/rand/%d/%d" % (seed, i)
    kind = rng.choice(["none", "length", "chunked"])
    body = bytes(rng.choice(ALPHABET) for _ in range(rng.randint(0, 2500))) if kind != "none" else b""
    headers = [b"Host: peer"]
    headers += [rand_case(b"x-pad-%d" % k) + b": " + b"v" * rng.randint(0, 200) for k in range(rng.randint(0, 4))]
    if kind == "length":
        headers.append(rand_case(b"content-length") + b":" + b" " * rng.randint(0, 3) + str(len(body)).encode())
        payload = body
    elif kind == "chunked":
        headers.append(rand_case(b"transfer-encoding") + b": chunked")
        payload = chunked(body)
    else:
        payload = b""
    rng.shuffle(headers)
    method = b"GET" if kind == "none" else rng.choice([b"POST", b"PUT"])
    stream += method + b" " + path + b" HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + payload
    expect.append({"path": path.decode(), "body": len(body), "sum": sum(body) % 65521})

cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(n, 6 * n))))
s = socket.create_connection((host, port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
last = 0
for c in cuts + [len(stream)]:
    s.sendall(stream[last:c])  # one sendmsg each
    last = c
print_bodies(s.makefile("rb"), n)
print(json.dumps({"expect": expect}))
