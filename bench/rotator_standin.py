#!/usr/bin/env python3
"""rotator_standin: a synthetic SSM + STS endpoint playing a large fleet, for
bench/rotator.sh. It is a FAKE of the AWS side at scale, not a test oracle:
moto could not serve 10,000 hosts at the needed rate, and real AWS would not let a
benchmark control latency, throttling and errors.

It answers, for --hosts N managed nodes (mi-<17 hex>, all online, tag Fleet=bench,
all enrolled with --recipient):
  DescribeDocument, DescribeInstanceInformation (every node whatever the filters;
  MaxResults, NextToken), GetParameters (every name holds --recipient), AssumeRole
  (synthetic credentials of realistic size), SendCommand (one invocation per
  target, Success --done-after seconds later) and ListCommandInvocations
  (InvokedAfter and DocumentName filters, MaxResults, NextToken).
Every request first sleeps --latency-ms; then fails with HTTP 500 with probability
--error-rate; SendCommand beyond --rate per second gets ThrottlingException (a
token bucket of --burst tokens, default rate/10). No signature is checked.

With --lost-answers P (and --agent), a SendCommand is, with probability P, created
and then answered HTTP 500: the answer is lost, the command is not. When the
rotator sends that host's delivery again, the stand-in plays the host for real:
it runs the real aovis-agent receive (--agent, host key in --agent-config, a
state directory per host under --agent-state, AWS_SSM_INSTANCE_ID set) on the
first payload, then on the second, and reports the second command with the
agent's exit code and its output as SSM does (stdout, a "----------ERROR-------"
line, stderr). Other commands are not run: they succeed --done-after seconds
after they were sent.

It prints {"port": N} once listening; GET /_stats returns the requests it saw per
operation (retries and refused ones included) and the number of invocations.
Stops on SIGTERM.
"""

import argparse
import bisect
import datetime
import http.server
import json
import random
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid


class Bucket:
    def __init__(self, rate, burst):
        self.rate = rate
        self.capacity = max(1.0, burst)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self):
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


class State:
    def __init__(self, args):
        self.ids = ["mi-%017x" % i for i in range(args.hosts)]
        self.recipient = args.recipient
        self.latency = args.latency_ms / 1000.0
        self.error_rate = args.error_rate
        self.done_after = args.done_after
        self.bucket = Bucket(args.rate, args.burst if args.burst else args.rate / 10.0)
        self.random = random.Random(args.seed)
        self.lock = threading.Lock()
        self.requests = {}
        # (requested, command_id, instance_id), kept sorted by time.
        self.invocations = []
        self.times = []
        self.lost_rate = args.lost_answers if args.agent else 0.0
        self.agent = args.agent
        self.agent_config = args.agent_config
        self.agent_state = args.agent_state
        # instance -> payload of a command whose answer was lost (not run yet).
        self.lost = {}
        # command id -> (status, output, exit code) of a command the agent ran.
        self.results = {}
        self.lost_count = 0

    def run_agent(self, instance, payload):
        """Runs the real aovis-agent receive as SSM Agent would on that host."""
        state = os.path.join(self.agent_state, instance)
        os.makedirs(state, exist_ok=True)
        env = dict(os.environ, AOVIS_STATE_DIR=state, AOVIS_CONFIG_DIR=self.agent_config,
                   AWS_SSM_INSTANCE_ID=instance)
        done = subprocess.run([self.agent, "receive", "--payload", payload], env=env,
                              capture_output=True, text=True, timeout=60)
        output = done.stdout
        if done.stderr:
            output += "\n----------ERROR-------\n" + done.stderr
        return ("Success" if done.returncode == 0 else "Failed", output, done.returncode)

    def count(self, operation):
        with self.lock:
            self.requests[operation] = self.requests.get(operation, 0) + 1
            return self.random.random() < self.error_rate


def iso(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_handler(state):
    token = "FwoGZXIvYXdzE" + "A" * 700

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; without this, Nagle and delayed
        # ACKs add ~40 ms to every answer.
        disable_nagle_algorithm = True

        def log_message(self, *_args):
            pass

        def reply(self, status, body, content_type="application/x-amz-json-1.1"):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            self.end_headers()
            self.wfile.write(data)

        def fail(self, status, code, query):
            if query:
                body = ("<ErrorResponse><Error><Type>Receiver</Type><Code>%s</Code><Message>injected</Message>"
                        "</Error><RequestId>1</RequestId></ErrorResponse>" % code).encode()
                self.reply(status, body, "text/xml")
            else:
                self.reply(status, {"__type": code, "message": "injected"})

        def do_GET(self):
            with state.lock:
                # Delivery commands created per second since the first one: the
                # rate profile the bench prints.
                sends = [t for t, _, _, _ in state.invocations]
                per_second = [0] * (int(sends[-1] - sends[0]) + 1) if sends else []
                for t in sends:
                    per_second[int(t - sends[0])] += 1
                stats = {"requests": dict(state.requests), "invocations": len(state.invocations),
                         "lost_answers": state.lost_count, "agent_runs": len(state.results),
                         "first_send": sends[0] if sends else None, "sends_per_second": per_second}
            self.reply(200, stats, "application/json")

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            target = self.headers.get("X-Amz-Target", "")
            query = not target
            if query:
                form = urllib.parse.parse_qs(body.decode())
                operation = form.get("Action", [""])[0]
            else:
                operation = target.split(".")[-1]
                request = json.loads(body or b"{}")
            time.sleep(state.latency)
            if state.count(operation):
                return self.fail(500, "InternalFailure" if query else "InternalServerError", query)
            if operation == "AssumeRole":
                now = time.time()
                session = form.get("RoleSessionName", ["x"])[0]
                xml = (
                    '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
                    "<Credentials><AccessKeyId>ASIABENCH%012d</AccessKeyId><SecretAccessKey>%s</SecretAccessKey>"
                    "<SessionToken>%s</SessionToken><Expiration>%s</Expiration></Credentials>"
                    "<AssumedRoleUser><AssumedRoleId>AROABENCH:%s</AssumedRoleId>"
                    "<Arn>arn:aws:sts::111122223333:assumed-role/bench/%s</Arn></AssumedRoleUser>"
                    "</AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleResponse>"
                    % (int(now * 1000) % 10**12, "b" * 40, token, iso(now + 3600), session, session)
                )
                return self.reply(200, xml.encode(), "text/xml")
            if operation == "DescribeDocument":
                return self.reply(200, {"Document": {"Name": request.get("Name"), "Status": "Active"}})
            if operation == "DescribeInstanceInformation":
                size = request.get("MaxResults", 50)
                start = int(request.get("NextToken") or 0)
                page = [{"InstanceId": i, "PingStatus": "Online", "PlatformType": "Linux",
                         "ResourceType": "ManagedInstance"} for i in state.ids[start:start + size]]
                answer = {"InstanceInformationList": page}
                if start + size < len(state.ids):
                    answer["NextToken"] = str(start + size)
                return self.reply(200, answer)
            if operation == "GetParameters":
                return self.reply(200, {"Parameters": [
                    {"Name": n, "Type": "String", "Value": state.recipient, "Version": 1}
                    for n in request.get("Names", [])], "InvalidParameters": []})
            if operation == "SendCommand":
                if not state.bucket.take():
                    return self.fail(400, "ThrottlingException", False)
                now = time.time()
                command_id = str(uuid.uuid4())
                instances = request.get("InstanceIds", [])
                payload = (request.get("Parameters", {}).get("payload") or [""])[0]
                with state.lock:
                    lose = payload and len(instances) == 1 and state.random.random() < state.lost_rate
                    earlier = state.lost.pop(instances[0], None) if payload and len(instances) == 1 else None
                if earlier is not None:
                    # The host runs the first command, then this one.
                    state.run_agent(instances[0], earlier)
                    result = state.run_agent(instances[0], payload)
                    with state.lock:
                        state.results[command_id] = result
                with state.lock:
                    for instance in instances:
                        at = bisect.bisect_right(state.times, now)
                        state.times.insert(at, now)
                        state.invocations.insert(at, (now, command_id, instance, request.get("DocumentName")))
                    if lose:
                        state.lost[instances[0]] = payload
                        state.lost_count += 1
                if lose:
                    return self.fail(500, "InternalServerError", False)
                return self.reply(200, {"Command": {"CommandId": command_id, "RequestedDateTime": now,
                                                    "DocumentName": request.get("DocumentName"),
                                                    "InstanceIds": request.get("InstanceIds", []),
                                                    "Status": "Pending"}})
            if operation == "ListCommandInvocations":
                size = request.get("MaxResults", 50)
                after = 0.0
                document = None
                for f in request.get("Filters", []):
                    if f["key"] == "InvokedAfter":
                        after = datetime.datetime.fromisoformat(f["value"].replace("Z", "+00:00")).timestamp()
                    elif f["key"] == "DocumentName":
                        document = f["value"]
                start = int(request.get("NextToken") or 0)
                now = time.time()
                with state.lock:
                    first = bisect.bisect_left(state.times, after)
                    chosen = [v for v in state.invocations[first:] if document in (None, v[3])]
                page = chosen[start:start + size]
                items = []
                for requested, command_id, instance, doc in page:
                    status = "Success" if now - requested >= state.done_after else "InProgress"
                    output, code = ("aovis-agent: stored" if status == "Success" else ""), 0
                    ran = state.results.get(command_id)
                    if ran and status == "Success":
                        status, output, code = ran
                    items.append({"CommandId": command_id, "InstanceId": instance, "DocumentName": doc,
                                  "RequestedDateTime": requested, "Status": status,
                                  "CommandPlugins": [{"Name": "aovisAgent", "Status": status,
                                                      "ResponseCode": code, "Output": output}]})
                answer = {"CommandInvocations": items}
                if start + size < len(chosen):
                    answer["NextToken"] = str(start + size)
                return self.reply(200, answer)
            return self.fail(400, "UnknownOperation", query)

    return Handler


def main():
    parser = argparse.ArgumentParser(description="synthetic SSM + STS for the rotator benchmark")
    parser.add_argument("--hosts", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=100.0, help="SendCommand per second")
    parser.add_argument("--burst", type=float, default=0.0, help="token bucket size (default rate/10)")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--error-rate", type=float, default=0.01)
    parser.add_argument("--done-after", type=float, default=0.5, help="seconds until a command succeeds")
    parser.add_argument("--recipient", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lost-answers", type=float, default=0.0,
                        help="share of SendCommands created, then answered HTTP 500")
    parser.add_argument("--agent", help="aovis-agent, run for hosts whose command was sent twice")
    parser.add_argument("--agent-config", help="AOVIS_CONFIG_DIR holding the hosts' key")
    parser.add_argument("--agent-state", help="one AOVIS_STATE_DIR per host is made under it")
    args = parser.parse_args()
    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = 256
        daemon_threads = True

    server = Server(("127.0.0.1", 0), make_handler(State(args)))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
