"""An HTTP/1.1 server that reports what it received: for every request, one
JSON line on stdout and as the response body, with the path, every
traceparent header, the header count and the body's length and checksum.
Content-Length and chunked bodies are read as RFC 9112 says, so a request
whose framing an injected header broke shows up as a wrong body, a missing
request or a 400.

usage: echo.py PORT
"""
import http.server
import json
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                if self.rfile.readline() != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def serve(self):
        body = self.body()
        out = json.dumps({
            "path": self.path,
            "traceparent": self.headers.get_all("traceparent") or [],
            "headers": len(self.headers),
            "body": len(body),
            "sum": sum(body) % 65521,
        }).encode()
        print(out.decode(), flush=True)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = serve

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
