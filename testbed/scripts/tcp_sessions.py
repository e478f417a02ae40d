#!/usr/bin/env python3
"""Interactive TCP sessions for the HA bed.

`tcp_sessions.py serve ADDR PORT`: an echo server, a thread per connection.
`tcp_sessions.py run ADDR PORT COUNT INTERVAL_MS STOP_FILE`: COUNT concurrent sessions; each sends a numbered
line every INTERVAL_MS and expects it echoed (each wait bounded by 30 s) until STOP_FILE exists, then closes.
Prints one JSON line: {"ok": sessions that ran to the end, "broken": [reasons of the others], "lines": total}.
"""
import json
import os
import socket
import socketserver
import sys
import threading
import time


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(4096)
            if not data:
                return
            self.request.sendall(data)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


def session(addr, port, interval, stop, results, lines):
    try:
        c = socket.create_connection((addr, port), timeout=30)
        c.settimeout(30)
        i = 0
        while not os.path.exists(stop):
            m = b"line %d\n" % i
            c.sendall(m)
            got = b""
            while len(got) < len(m):
                d = c.recv(100)
                if not d:
                    raise ConnectionError("closed by the peer after %d lines" % i)
                got += d
            if got != m:
                raise ValueError("line %d echoed as %r" % (i, got))
            i += 1
            time.sleep(interval)
        c.close()
        lines.append(i)
        results.append(None)
    except Exception as e:  # every failure is a broken session, reported by reason
        results.append("%s: %s" % (type(e).__name__, e))


def main():
    if sys.argv[1] == "serve":
        Server((sys.argv[2], int(sys.argv[3])), Echo).serve_forever()
        return
    addr, port, count, interval_ms, stop = sys.argv[2:7]
    results, lines = [], []
    threads = [
        threading.Thread(target=session, args=(addr, int(port), int(interval_ms) / 1000, stop, results, lines))
        for _ in range(int(count))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    broken = [r for r in results if r is not None]
    print(json.dumps({"ok": len(results) - len(broken), "broken": broken, "lines": sum(lines)}))


if __name__ == "__main__":
    main()
