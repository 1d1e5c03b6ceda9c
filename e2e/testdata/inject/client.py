"""Sends HTTP/1.1 requests over one connection with exact send boundaries,
then reads every response and prints each JSON body on a line. Each send is
its own sendmsg, so sonde's sk_msg program sees the same boundaries.

usage: client.py HOST PORT

The requests, in order, and what each tries:
  /cl       a Content-Length body that looks like headers and a request
  /chunked  a chunked body whose data looks like the end of a message,
            with a chunk extension and a trailer
  /p1 /p2 /p3  three requests in one send (pipelined), the middle one
            with a body
  /split    a request cut inside the method, inside a header name, between
            the CR and LF of the empty line, and inside its body
  /present  a request with its own traceparent: must arrive untouched
  /big      a 300 KB body in one send, more than a message sk_msg sees
  /after    a request after it, to show the framing survived
  /bytewise a chunked request with a body and a trailer, one byte per send:
            every prefix of it ends a message once
  /last     one more request, on a framing that survived all of it
"""
import socket
import sys
import time

from responses import print_bodies

TRICK = b"\r\n\r\nGET /evil HTTP/1.1\r\nHost: x\r\n\r\n"
PRESENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
BIG = bytes(range(256)) * 1200


def post(path, body, extra=b""):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: peer\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def get(path, extra=b""):
    return b"GET " + path + b" HTTP/1.1\r\nHost: peer\r\n" + extra + b"\r\n"


LOOKS_DONE = b"\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n"
chunked = (b"POST /chunked HTTP/1.1\r\nHost: peer\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"a;name=value\r\n0123456789\r\n"
           + b"%X\r\n" % len(LOOKS_DONE) + LOOKS_DONE + b"\r\n"
           b"0\r\nX-Trailer: yes\r\n\r\n")
split = [b"PO", b"ST /split HTTP/1.1\r\nHost: peer\r\nContent-Le", b"ngth: 10\r\nX-A: b\r\n\r",
         b"\n01234", b"56789"]
# (the sends, how many responses they get)
sends = [
    ([post(b"/cl", TRICK)], 1),
    ([chunked], 1),
    ([get(b"/p1") + post(b"/p2", b"pipelined body") + get(b"/p3")], 3),
    (split, 1),
    ([get(b"/present", b"traceparent: " + PRESENT.encode() + b"\r\n")], 1),
    ([post(b"/big", BIG)], 1),
    ([get(b"/after")], 1),
    ([bytes([c]) for c in chunked.replace(b"/chunked", b"/bytewise")], 1),
    ([get(b"/last")], 1),
]

s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
f = s.makefile("rb")

for parts, responses in sends:
    for i, part in enumerate(parts):
        s.sendall(part)
        if i + 1 < len(parts) and len(parts) < 10:
            time.sleep(0.05)  # a separate sendmsg, and a separate segment
    print_bodies(f, responses)
s.close()
