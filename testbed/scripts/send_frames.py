#!/usr/bin/env python3
"""Sends raw Ethernet frames (hex, one per line on stdin) out of IFACE through an AF_PACKET socket, exactly as
given: tags, padding and all."""
import socket
import sys

iface = sys.argv[1]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
for line in sys.stdin:
    line = line.strip()
    if line:
        s.send(bytes.fromhex(line))
