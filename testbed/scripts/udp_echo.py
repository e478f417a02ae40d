#!/usr/bin/env python3
"""UDP server for the test bed: answers every datagram with its payload reversed."""
import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.bind((host, port))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data[::-1], peer)
