# trace_client.py - a Python client with the seed's bug, for `closewise
# trace` (tests/test_trace.c): it reads until the server ends the
# connection and keeps the socket. Only the interpreter's native frames
# can be named (socket.recv in CPython's _socket module).
# usage: python3 trace_client.py HOST PORT HOLD_MS
import socket
import sys
import time

s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"hello\n")
while s.recv(512):
    pass
time.sleep(int(sys.argv[3]) / 1000)
