#!/usr/bin/env python3
"""`udp_flows.py ADDR SECONDS`: opens new UDP flows toward ADDR as fast as it can for SECONDS: one datagram
per flow, each to the next destination port (1024-65535) from one of 64 source sockets, so every datagram is a
5-tuple not seen for a while. Prints the datagrams sent."""
import socket
import sys
import time

addr, seconds = sys.argv[1], float(sys.argv[2])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(64)]
for s in socks:
    s.setblocking(False)
sent, port = 0, 1024
end = time.monotonic() + seconds
while time.monotonic() < end:
    for s in socks:
        try:
            s.sendto(b"x", (addr, port))
            sent += 1
        except BlockingIOError:
            pass
    port = port + 1 if port < 65535 else 1024
print(sent)
