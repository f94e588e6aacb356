"""Slow clients for bench/load.sh: connections that trickle a request's headers one
byte a second (slowloris) or send nothing at all, held for a while.

Usage: load_slow_clients.py HOST PORT CONNECTIONS SECONDS

Prints one line: how many connections opened, how many the server closed within 5 s
of their connect and how many later, and how long it let them live. The
daemon closes each once its client timeout (`client_timeout_secs`, default 10 s)
passes, or earlier when it is the oldest idle connection at the cap and a new
client needs the slot.
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
closed_after = []


def reap(timeout):
    """Notes every connection the server has closed (end of file or reset)."""
    for key, _ in selector.select(timeout=timeout):
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
    # Closes while connecting count from their own connect, not from the end of
    # this loop.
    reap(0)

start = time.monotonic()
next_tick = start
while time.monotonic() - start < seconds and opened:
    reap(0.1)
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

early = [t for t in closed_after if t < 5.0]
late = [t for t in closed_after if t >= 5.0]
summary = (f"slow clients: {count} tried, {refused} refused at connect, "
           f"{len(early)} closed within 5 s of connecting")
if early:
    summary += f" (median after {statistics.median(early):.1f} s)"
summary += f", {len(late)} closed later"
if late:
    summary += f" (median after {statistics.median(late):.1f} s, longest {max(late):.1f} s)"
print(summary + f", {len(opened)} still open after {seconds:.0f} s")
