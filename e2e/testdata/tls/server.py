"""A threading HTTPS server for sonde's TLS end-to-end tests.

usage: server.py PORT CERT KEY

GET /code/NNN answers status NNN with a short body naming the code.
GET /big?n=N answers 200 with a body of N bytes (default 20000).
Anything else answers 404. HTTP/1.1 keep-alive; every response has a
Content-Length. It prints "listening PORT" once it accepts connections.
"""

import http.server
import ssl
import sys
import urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        code, body = 404, b"not found\n"
        if u.path.startswith("/code/"):
            code = int(u.path[len("/code/"):])
            body = ("status %d for %s\n" % (code, self.path)).encode()
        elif u.path == "/big":
            q = urllib.parse.parse_qs(u.query)
            n = int(q.get("n", ["20000"])[0])
            body = (b"0123456789abcdef" * (n // 16 + 1))[:n]
            code = 200
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = Server(("127.0.0.1", port), Handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("listening %d" % port, flush=True)
    srv.serve_forever()


main()
