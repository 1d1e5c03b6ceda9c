"""HTTPS clients for sonde's TLS end-to-end tests.

usage: client.py MODE PORT CA

keepalive: 10 GETs over one http.client.HTTPSConnection (paths /ka/0 ..
    /ka/9), then 5 GETs with urllib.request (/url/0 .. /url/4), each its own
    connection.
concurrent: 16 threads, each with its own keep-alive HTTPSConnection, 20
    GETs each of /code/NNN?i=THREAD-REQ, NNN varying per request; every
    response's status must be NNN.
buffered: 5 GETs of /big?n=20000&r=I over one keep-alive raw TLS socket
    (ssl.SSLContext.wrap_socket), each response read with recv(100) until
    its whole body is in.

It exits non-zero when a response is not what was asked for, and prints a
summary line on success.
"""

import http.client
import socket
import ssl
import sys
import threading
import urllib.request

CODES = [200, 201, 202, 203, 206, 207, 208, 226]


def context(ca):
    ctx = ssl.create_default_context(cafile=ca)
    return ctx


def keepalive(port, ctx):
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    for i in range(10):
        conn.request("GET", "/ka/%d" % i)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200 or body != b"ok\n":
            sys.exit("keep-alive request %d: %d %r" % (i, resp.status, body))
    conn.close()
    for i in range(5):
        with urllib.request.urlopen("https://127.0.0.1:%d/url/%d" % (port, i), context=ctx, timeout=10) as resp:
            body = resp.read()
            if resp.status != 200 or body != b"ok\n":
                sys.exit("urllib request %d: %d %r" % (i, resp.status, body))
    print("keepalive ok 15")


def concurrent(port, ctx):
    errors = []
    counts = [0] * 16

    def worker(t):
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=20)
            for r in range(20):
                code = CODES[(t * 7 + r * 3) % len(CODES)]
                conn.request("GET", "/code/%d?i=%d-%d" % (code, t, r))
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != code or ("status %d " % code).encode() not in body:
                    errors.append("thread %d request %d: want %d, got %d %r" % (t, r, code, resp.status, body))
                    return
                counts[t] += 1
            conn.close()
        except Exception as e:  # noqa: BLE001
            errors.append("thread %d: %r" % (t, e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        sys.exit("\n".join(errors))
    print("concurrent ok %d" % sum(counts))


def buffered(port, ctx, n=20000):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    for i in range(5):
        path = "/big?n=%d&r=%d" % (n, i)
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (path, port)).encode())
        data = b""
        reads = 0
        while True:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = None
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v)
                if length is not None and len(body) >= length:
                    break
            # Small reads: the first SSL_read of a record pulls all of it
            # into OpenSSL's buffer, the next ones make no syscall.
            chunk = s.recv(100)
            reads += 1
            if not chunk:
                break
            data += chunk
        status = data.split(b"\r\n", 1)[0]
        head, _, body = data.partition(b"\r\n\r\n")
        if not status.startswith(b"HTTP/1.1 200") or len(body) != n:
            sys.exit("request %d: %r, %d body bytes" % (i, status, len(body)))
        print("request %d: %d reads" % (i, reads))
    s.close()
    print("buffered ok 5")


def main():
    mode, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ctx = context(ca)
    {"keepalive": keepalive, "concurrent": concurrent, "buffered": buffered}[mode](port, ctx)


main()
