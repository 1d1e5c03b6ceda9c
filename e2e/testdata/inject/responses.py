"""Reading the responses of testdata/inject/echo.py, for the clients here."""
import sys


def print_bodies(f, n):
    """Reads n HTTP/1.1 200 responses from the file f and prints each body
    on a line; exits on any other response."""
    for _ in range(n):
        status = f.readline()
        if not status.startswith(b"HTTP/1.1 200"):
            sys.exit("bad response: %r" % status)
        length = 0
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        print(f.read(length).decode(errors="replace"), flush=True)
