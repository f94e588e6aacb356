#!/usr/bin/env python3
"""lambda_runtime_api: a FAKE of the AWS Lambda Runtime API (2018-06-01), the
loopback HTTP interface a provided.al2023 `bootstrap` polls. No real Lambda runs
on a test machine, so this serves the events given on the command line, one per
`GET /2018-06-01/runtime/invocation/next`, each with a request id and a deadline
--deadline-ms from the moment it is handed out, and records what the function
posts to `.../invocation/<id>/response` or `.../invocation/<id>/error`.

Usage: lambda_runtime_api.py --deadline-ms 60000 [--exit-after 120] EVENT_JSON ...

It exits after --exit-after seconds in any case, so a test reading its output
never hangs on a function that crashed.

Prints {"port": N} once listening, then one JSON line per result:
  {"request_id": "...", "kind": "response" | "error", "body": <posted JSON>}
After the last event, `next` blocks until the process is killed (as Lambda
freezes an idle function).
"""

import argparse
import http.server
import json
import os
import sys
import threading
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--deadline-ms", type=int, default=60000)
    parser.add_argument("--exit-after", type=float, default=120.0)
    parser.add_argument("events", nargs="+")
    args = parser.parse_args()
    events = list(args.events)
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args):
            pass

        def reply(self, status, body, headers=()):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if not self.path.endswith("/runtime/invocation/next"):
                return self.reply(404, "{}")
            with lock:
                event = events.pop(0) if events else None
                number = len(args.events) - len(events)
            if event is None:
                while True:
                    time.sleep(3600)
            deadline = int(time.time() * 1000) + args.deadline_ms
            self.reply(200, event, [
                ("Lambda-Runtime-Aws-Request-Id", "request-%d" % number),
                ("Lambda-Runtime-Deadline-Ms", str(deadline)),
                ("Lambda-Runtime-Invoked-Function-Arn",
                 "arn:aws:lambda:us-east-1:123456789012:function:aovis-rotator-test"),
                ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000"),
            ])

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = self.path.split("/")
            kind = parts[-1]
            request_id = parts[-2] if len(parts) > 2 else ""
            try:
                posted = json.loads(body or b"null")
            except ValueError:
                posted = body.decode("utf-8", "replace")
            print(json.dumps({"request_id": request_id, "kind": kind, "body": posted}), flush=True)
            self.reply(202, '{"status":"OK"}')

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    threading.Timer(args.exit_after, lambda: os._exit(3)).start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
