"""A one-invocation stand-in for the AWS Lambda Runtime API, to run a
`provided.al2023` `bootstrap` here as Lambda would run it.

Usage: lambda_runtime_api.py EVENT_JSON TIMEOUT_SECONDS BOOTSTRAP [ARG...]

What it fakes, and why: Lambda itself is not here. A custom runtime's bootstrap
talks to Lambda only through this HTTP API (AWS_LAMBDA_RUNTIME_API), so serving
it is enough to run the real binary through one real invocation:

  GET  /2018-06-01/runtime/invocation/next        -> EVENT_JSON once, with the
       Lambda-Runtime-Aws-Request-Id, -Deadline-Ms (now + TIMEOUT_SECONDS),
       -Invoked-Function-Arn and -Trace-Id headers; later calls wait, as
       Lambda's do between invocations;
  POST /2018-06-01/runtime/invocation/ID/response -> the result;
  POST /2018-06-01/runtime/invocation/ID/error    -> the function's error;
  POST /2018-06-01/runtime/init/error             -> an error before the first
       invocation.

The bootstrap runs with this process's environment plus what Lambda sets
(AWS_LAMBDA_RUNTIME_API, AWS_LAMBDA_FUNCTION_NAME unless given, memory, version,
log group and stream). Its stdout and stderr (the function's log) are passed
through to this process's stderr. Once the invocation ends the bootstrap is
stopped, and one JSON line is printed on stdout:
  {"kind": "response" | "error" | "init_error" | "timeout", "body": <what it posted>}
Exit status 0 when the bootstrap answered (even with an error), 1 otherwise.
"""
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import uuid

event, timeout = sys.argv[1], float(sys.argv[2])
command = sys.argv[3:]
request_id = str(uuid.uuid4())
function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "aovis-rotator")
result = {}
done = threading.Event()
served = threading.Event()


class Api(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/2018-06-01/runtime/invocation/next":
            return self.reply(404)
        if served.is_set():
            done.wait()
            time.sleep(timeout)
            return self.reply(500)
        served.set()
        deadline_ms = int((time.time() + timeout) * 1000)
        arn = f"arn:aws:lambda:us-east-1:111122223333:function:{function}"
        self.reply(200, event.encode(), [
            ("Content-Type", "application/json"),
            ("Lambda-Runtime-Aws-Request-Id", request_id),
            ("Lambda-Runtime-Deadline-Ms", str(deadline_ms)),
            ("Lambda-Runtime-Invoked-Function-Arn", arn),
            ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0"),
        ])

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        kinds = {
            f"/2018-06-01/runtime/invocation/{request_id}/response": "response",
            f"/2018-06-01/runtime/invocation/{request_id}/error": "error",
            "/2018-06-01/runtime/init/error": "init_error",
        }
        kind = kinds.get(self.path)
        if kind is None:
            return self.reply(404)
        self.reply(202, b'{"status":"OK"}', [("Content-Type", "application/json")])
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = body.decode(errors="replace")
        result.update(kind=kind, body=parsed)
        done.set()


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()
env = dict(os.environ)
env.update({
    "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
    "AWS_LAMBDA_FUNCTION_NAME": function,
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_LOG_GROUP_NAME": "/aovis/aovis/rotator",
    "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/23/[$LATEST]0123456789abcdef",
})
bootstrap = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                             stdout=sys.stderr, stderr=sys.stderr)
deadline = time.time() + timeout + 10
while not done.is_set() and time.time() < deadline and bootstrap.poll() is None:
    done.wait(0.1)
bootstrap.terminate()
try:
    bootstrap.wait(5)
except subprocess.TimeoutExpired:
    bootstrap.kill()
    bootstrap.wait()
if not result:
    result.update(kind="timeout" if bootstrap.returncode is None or time.time() >= deadline
                  else "exited", body=f"bootstrap exit status {bootstrap.returncode}")
print(json.dumps(result), flush=True)
server.shutdown()
sys.exit(0 if result["kind"] in ("response", "error", "init_error") else 1)
