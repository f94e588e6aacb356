"""Slow clients for bench/load.sh: connections that trickle a request's headers one
byte a second (slowloris) or send nothing at all, held for a while.

Usage: load_slow_clients.py HOST PORT CONNECTIONS SECONDS

Prints one line: how many connections opened, how many the server closed, and the
median and longest time the server let one live. The daemon should close each once
its client timeout (`client_timeout_secs`, default 10 s) passes.
"""
import selectors
import socket
import statistics
import sys
import time

host, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
request = b"GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: x\r\nX-Slow: "

selector = selectors.DefaultSelector()
opened, refused = {}, 0
for i in range(count):
    try:
        sock = socket.create_connection((host, port), timeout=2)
    except OSError:
        refused += 1
        continue
    sock.setblocking(False)
    # Half trickle headers, half send nothing.
    opened[sock] = (time.monotonic(), i % 2 == 0, 0)
    selector.register(sock, selectors.EVENT_READ)

closed_after = []
start = time.monotonic()
next_tick = start
while time.monotonic() - start < seconds and opened:
    for key, _ in selector.select(timeout=0.1):
        sock = key.fileobj
        try:
            data = sock.recv(4096)
        except OSError:
            data = b""
        if not data:
            born, _, _ = opened.pop(sock)
            closed_after.append(time.monotonic() - born)
            selector.unregister(sock)
            sock.close()
    if time.monotonic() >= next_tick:
        next_tick += 1.0
        for sock, (born, trickle, sent) in list(opened.items()):
            if not trickle:
                continue
            chunk = request[sent:sent + 1] if sent < len(request) else b"a"
            try:
                sock.send(chunk)
                opened[sock] = (born, trickle, sent + 1)
            except OSError:
                pass
for sock in opened:
    sock.close()

at_once = [t for t in closed_after if t < 1.0]
later = [t for t in closed_after if t >= 1.0]
if later:
    print(f"slow clients: {count} tried, {refused} refused at connect, {len(at_once)} closed at once (over the cap), "
          f"{len(later)} closed by the server's timeout (median after {statistics.median(later):.1f} s, "
          f"longest {max(later):.1f} s), {len(opened)} still open after {seconds:.0f} s")
else:
    print(f"slow clients: {count} tried, {refused} refused at connect, {len(at_once)} closed at once (over the cap), "
          f"none closed by a timeout, "
          f"{len(opened)} still open after {seconds:.0f} s")
