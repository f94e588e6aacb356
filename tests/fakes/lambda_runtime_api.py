#!/usr/bin/env python3
"""lambda_runtime_api: a FAKE of the AWS Lambda Runtime API (2018-06-01), the
loopback HTTP interface through which a `provided.al2023` `bootstrap` gets its
events and returns its results. No real Lambda runs on a test machine, and a
custom runtime talks to Lambda only through this API (at AWS_LAMBDA_RUNTIME_API),
so serving it is enough to run the real binary through real invocations.

What it implements of the real API:
  GET  /2018-06-01/runtime/invocation/next         the next EVENT_JSON, with the
       headers Lambda sends: Lambda-Runtime-Aws-Request-Id (request-1, -2, ...),
       -Deadline-Ms (now + --deadline-ms, counted from the moment the event is
       handed out), -Invoked-Function-Arn and -Trace-Id. After the last event it
       blocks, as Lambda freezes an idle function.
  POST /2018-06-01/runtime/invocation/ID/response  the invocation's result;
  POST /2018-06-01/runtime/invocation/ID/error     the invocation's error;
  POST /2018-06-01/runtime/init/error              an error before the first event.
What it does not: the Extensions and Telemetry APIs, X-Ray, response streaming,
freezing and thawing, memory or time limits on the function (the deadline is only
announced, as Lambda announces it; the function must honour it itself).

Usage:
  lambda_runtime_api.py [--deadline-ms MS] [--exit-after S] EVENT_JSON...
      Serve: prints {"port": N} once listening; the caller starts the function
      with AWS_LAMBDA_RUNTIME_API=127.0.0.1:N.
  lambda_runtime_api.py [--deadline-ms MS] [--exit-after S] EVENT_JSON... -- BOOTSTRAP [ARG...]
      Run: starts BOOTSTRAP itself with this process's environment plus what
      Lambda sets (AWS_LAMBDA_RUNTIME_API, AWS_LAMBDA_FUNCTION_NAME unless given,
      memory size unless given, version, log group and stream), passes its stdout
      and stderr (the function's log) through to this process's stderr, and stops
      it once every event is answered or it exits. Exit status 0 when every event
      was answered (even with an error) or the function reported an init error,
      1 otherwise.

Both print one JSON line per result on stdout:
  {"request_id": "request-1", "kind": "response" | "error" | "init_error", "body": <posted JSON>}
and, in run mode, for events never answered, one line with "kind": "timeout"
(the bootstrap still ran when --exit-after passed) or "exited" (it stopped).
In serve mode the process exits with status 3 after --exit-after seconds in any
case, so a test reading its output never hangs on a function that crashed.
"""

import argparse
import http.server
import json
import os
import subprocess
import sys
import threading
import time


class Runtime:
    """The events, and the results the function posted."""

    def __init__(self, events, deadline_ms, function):
        self.events = list(events)
        self.total = len(self.events)
        self.deadline_ms = deadline_ms
        self.function = function
        self.lock = threading.Lock()
        self.answered = 0
        self.finished = threading.Event()

    def next_event(self):
        with self.lock:
            if not self.events:
                return None
            event = self.events.pop(0)
            return event, "request-%d" % (self.total - len(self.events))

    def record(self, request_id, kind, body):
        try:
            posted = json.loads(body or b"null")
        except ValueError:
            posted = body.decode("utf-8", "replace")
        with self.lock:
            print(json.dumps({"request_id": request_id, "kind": kind, "body": posted}), flush=True)
            if kind == "init_error":
                self.finished.set()
            else:
                self.answered += 1
                if self.answered >= self.total:
                    self.finished.set()


def make_handler(runtime):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args):
            pass

        def reply(self, status, body=b"", headers=()):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path != "/2018-06-01/runtime/invocation/next":
                return self.reply(404, b"{}")
            handed = runtime.next_event()
            if handed is None:
                while True:
                    time.sleep(3600)
            event, request_id = handed
            deadline = int(time.time() * 1000) + runtime.deadline_ms
            arn = "arn:aws:lambda:us-east-1:123456789012:function:" + runtime.function
            self.reply(200, event.encode(), [
                ("Lambda-Runtime-Aws-Request-Id", request_id),
                ("Lambda-Runtime-Deadline-Ms", str(deadline)),
                ("Lambda-Runtime-Invoked-Function-Arn", arn),
                ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0"),
            ])

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = self.path.split("/")
            if self.path == "/2018-06-01/runtime/init/error":
                kind, request_id = "init_error", ""
            elif len(parts) == 6 and parts[1:4] == ["2018-06-01", "runtime", "invocation"] \
                    and parts[5] in ("response", "error"):
                kind, request_id = parts[5], parts[4]
            else:
                return self.reply(404, b"{}")
            self.reply(202, b'{"status":"OK"}')
            runtime.record(request_id, kind, body)

    return Handler


def main():
    argv = sys.argv[1:]
    bootstrap = []
    if "--" in argv:
        split = argv.index("--")
        argv, bootstrap = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deadline-ms", type=int, default=60000,
                        help="time each invocation gets, from when its event is handed out")
    parser.add_argument("--exit-after", type=float, default=120.0,
                        help="give up after this many seconds")
    parser.add_argument("events", nargs="+", help="one JSON event per invocation")
    args = parser.parse_args(argv)

    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "aovis-rotator")
    runtime = Runtime(args.events, args.deadline_ms, function)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(runtime))
    server.daemon_threads = True
    port = server.server_address[1]

    if not bootstrap:
        threading.Timer(args.exit_after, lambda: os._exit(3)).start()
        print(json.dumps({"port": port}), flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        return 0

    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:%d" % port,
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/" + function,
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/23/[$LATEST]0123456789abcdef",
    })
    child = subprocess.Popen(bootstrap, env=env, stdin=subprocess.DEVNULL,
                             stdout=sys.stderr, stderr=sys.stderr)
    give_up = time.time() + args.exit_after
    while not runtime.finished.is_set() and time.time() < give_up and child.poll() is None:
        runtime.finished.wait(0.1)
    # A result posted just before the bootstrap exited is still recorded.
    runtime.finished.wait(0.5)
    still_running = child.poll() is None
    child.terminate()
    try:
        child.wait(5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    server.shutdown()
    with runtime.lock:
        unanswered = runtime.total - runtime.answered
        if runtime.finished.is_set():
            return 0
        kind = "timeout" if still_running else "exited"
        for _ in range(unanswered):
            print(json.dumps({"request_id": "", "kind": kind,
                              "body": "bootstrap exit status %s" % child.returncode}), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
