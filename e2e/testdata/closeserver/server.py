# An HTTP/1.0 server whose responses carry no length: each body ends when
# the server closes the connection, so only the close ends its exchange.
# With "fork" a child serves each connection and the parent closes its own
# copy of the socket first, as pre-fork servers do; the child does not exit
# after serving, so its process exit cannot stand in for the close. With
# "shutdown" the server shuts its sending side down and closes only once
# the client has closed too, as openssl s_server does: by then TCP has
# finished with the socket, and the close changes no state.
import ctypes
import os
import signal
import socket
import sys
import time

mode = sys.argv[2] if len(sys.argv) > 2 else "single"
fork = mode == "fork"
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(16)
while True:
    conn, _ = srv.accept()
    if fork:
        if os.fork() != 0:
            conn.close()
            continue
        # The child goes when the test kills the parent.
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    head = b""
    try:
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
        if head:  # the harness's port probe sends nothing
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
            conn.sendall(b"this body ends at the close\n")
            if mode == "shutdown":
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(4096):
                    pass
                time.sleep(0.05)  # the client's FIN is acknowledged
    except OSError:
        pass
    conn.close()
    if fork:
        srv.close()
        time.sleep(600)
        os._exit(0)
