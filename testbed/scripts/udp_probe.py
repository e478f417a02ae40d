#!/usr/bin/env python3
"""UDP client for the test bed: sends COUNT datagrams of varied sizes (1..1400 bytes), one at a time, and
prints how many were answered with the reversed payload. A datagram is retried up to 5 times on timeout (UDP
may lose one); one that is never answered ends the run early, so a broken path fails fast."""
import socket
import sys

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.settimeout(1.0)
ok = 0
for i in range(count):
    payload = bytes((i * 7 + j) % 256 for j in range(1 + (i * 37) % 1400))
    reply = None
    for _attempt in range(5):
        s.sendto(payload, (host, port))
        try:
            reply = s.recv(65535)
            break
        except socket.timeout:
            continue
    if reply is None:
        break
    ok += reply == payload[::-1]
print(ok)
