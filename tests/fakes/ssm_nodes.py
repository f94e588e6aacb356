#!/usr/bin/env python3
"""ssm_nodes: the smallest honest stand-in for the SSM Agent side of Run Command.

moto 5.2.5 answers AssumeRole (with SigV4 checks), Parameter Store and SendCommand /
ListCommands, but it implements neither DescribeInstanceInformation nor
ListCommandInvocations, its GetCommandInvocation is synthetic (always Success, no
output), and it runs nothing on any host (see moto/ssm/models.py and
moto/ssm/responses.py). This script sits between the rotator and moto on loopback
and fills exactly that gap:

What it FAKES (because no real part exists without AWS):
  * the managed nodes: each has an instance id, tags, online/offline, and its own
    AOVIS_STATE_DIR / AOVIS_CONFIG_DIR;
  * DescribeInstanceInformation: tag:<key>, InstanceIds and PingStatus filters,
    MaxResults 5..50, NextToken pagination;
  * the SSM Agent: after moto accepted a SendCommand, the document's runCommand
    lines are rendered with the parameters substituted (as SSM Agent does) and run
    with `sh` on each target node, with AWS_SSM_INSTANCE_ID set, the node's
    directories in AOVIS_STATE_DIR / AOVIS_CONFIG_DIR, and /usr/bin/aovis-agent
    replaced by the built binary (--agent); a run ends Success (exit 0), Failed, or
    TimedOut (the document's timeoutSeconds);
  * ListCommandInvocations (CommandId, InstanceId, Details, Filters InvokedAfter,
    InvokedBefore, DocumentName, Status; MaxResults 1..50; NextToken) and
    GetCommandInvocation, answered from what the nodes did: stdout and stderr are
    kept to their first 24,000 characters, a plugin's Output to 2,500, with SSM's
    "----------ERROR-------" line between stdout and stderr;
  * SSM's own parameter checks: a SendCommand whose parameters break the
    document's allowedValues / allowedPattern is refused with InvalidParameters,
    and one naming an unknown or offline node with InvalidInstanceId.

What it FORWARDS unchanged to moto (method, path, every header including Host, and
the body, so moto's SigV4 check still holds): everything else, including
SendCommand itself, ListCommands, Get/PutParameter(s), DescribeDocument and all of
STS.

Faults for tests, switchable at start (--faults JSON) or at run time (POST the
same JSON to /_fakes/faults):
  {"throttle_every": {"SendCommand": 2}}   every 2nd SendCommand -> ThrottlingException
  {"error_5xx_every": 3}                   every 3rd request -> HTTP 500
  {"invalid_instances": ["mi-..."]}        SendCommand to them -> InvalidInstanceId
  {"hang_instances": ["mi-..."]}           their commands stay InProgress forever
  {"latency_ms": 20}                       added to every request
  {"deny_roles": ["arn:aws:iam::...:role/x"]}  AssumeRole on them -> AccessDenied
                                           (moto does not evaluate trust policies)
  {"accept_then_500": ["mi-..."]}          the first SendCommand naming one of them
                                           is accepted by moto and run on the nodes,
                                           then answered HTTP 500 InternalServerError
                                           (as when SSM created the command but the
                                           answer was lost), so the SDK retries and
                                           a second command reaches the node; later
                                           SendCommands to it are answered normally

Usage:
  ssm_nodes.py --moto http://127.0.0.1:5000 --listen 0 --nodes nodes.json \
               --agent target/debug/aovis-agent \
               [--document lambda-rotator/ssm/Aovis-DeliverCredentials.json]

It prints one JSON line {"port": N} on stdout once it listens (port 0 picks a free
one). nodes.json is a list of
  {"instance_id": "mi-...", "online": true, "tags": {"Env": "test"},
   "state_dir": "...", "config_dir": "..."}
GET /_fakes/invocations returns every invocation with its full stdout/stderr, for
tests. It stops on SIGTERM or SIGINT.
"""

import argparse
import datetime
import http.client
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

FINAL = ("Success", "Failed", "TimedOut", "Cancelled")


def now_epoch():
    return time.time()


def iso_to_epoch(text):
    text = text.strip().replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text).timestamp()


class Invocation:
    def __init__(self, command_id, instance_id, document, comment, requested):
        self.command_id = command_id
        self.instance_id = instance_id
        self.document = document
        self.comment = comment
        self.requested = requested
        self.status = "InProgress"
        self.code = -1
        self.stdout = ""
        self.stderr = ""

    def plugin_output(self):
        text = self.stdout
        if self.stderr:
            text += "\n----------ERROR-------\n" + self.stderr
        return text[:2500]

    def to_json(self, details):
        item = {
            "CommandId": self.command_id,
            "InstanceId": self.instance_id,
            "InstanceName": "",
            "Comment": self.comment,
            "DocumentName": self.document,
            "DocumentVersion": "$DEFAULT",
            "RequestedDateTime": self.requested,
            "Status": self.status,
            "StatusDetails": self.status,
            "CommandPlugins": [],
        }
        if details:
            item["CommandPlugins"] = [
                {
                    "Name": "aovisAgent",
                    "Status": self.status,
                    "StatusDetails": self.status,
                    "ResponseCode": self.code,
                    "Output": self.plugin_output(),
                }
            ]
        return item


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.config = {}
        self.counters = {}
        self.total = 0

    def set(self, config):
        with self.lock:
            self.config = dict(config)
            self.counters = {}
            self.total = 0

    def latency(self):
        return self.config.get("latency_ms", 0) / 1000.0

    def check(self, operation):
        """Returns (status, code, message) of an injected error, or None."""
        with self.lock:
            self.total += 1
            every = self.config.get("error_5xx_every")
            if every and self.total % every == 0:
                return (500, "InternalServerError", "injected by ssm_nodes")
            per_op = self.config.get("throttle_every", {}).get(operation)
            if per_op:
                count = self.counters.get(operation, 0) + 1
                self.counters[operation] = count
                if count % per_op == 0:
                    return (400, "ThrottlingException", "Rate exceeded")
        return None

    def invalid(self, instance_id):
        return instance_id in self.config.get("invalid_instances", [])

    def denies(self, role_arn):
        return role_arn in self.config.get("deny_roles", [])

    def hangs(self, instance_id):
        return instance_id in self.config.get("hang_instances", [])

    def lose_answer(self, instance_ids):
        """accept_then_500: True once per named instance id."""
        with self.lock:
            named = set(self.config.get("accept_then_500", [])) & set(instance_ids)
            done = self.counters.setdefault("accept_then_500", set())
            fresh = named - done
            done.update(fresh)
            return bool(fresh)


class Fleet:
    """The managed nodes and what ran on them."""

    def __init__(self, nodes, agent, document):
        self.nodes = {n["instance_id"]: n for n in nodes}
        self.order = [n["instance_id"] for n in nodes]
        self.agent = agent
        self.document = document
        self.invocations = []
        self.lock = threading.Lock()
        self.faults = Faults()

    # -- DescribeInstanceInformation -----------------------------------------
    def describe(self, body):
        filters = body.get("Filters", [])
        max_results = body.get("MaxResults", 50)
        if not 5 <= max_results <= 50:
            raise ApiError(400, "ValidationException", "MaxResults must be 5 to 50")
        selected = []
        for instance_id in self.order:
            node = self.nodes[instance_id]
            ping = "Online" if node.get("online", True) else "ConnectionLost"
            keep = True
            for f in filters:
                key, values = f.get("Key", ""), f.get("Values", [])
                if key.startswith("tag:"):
                    keep &= node.get("tags", {}).get(key[4:]) in values
                elif key == "InstanceIds":
                    keep &= instance_id in values
                elif key == "PingStatus":
                    keep &= ping in values
                else:
                    raise ApiError(400, "InvalidFilterKey", "unsupported filter key " + key)
            if keep:
                selected.append(
                    {
                        "InstanceId": instance_id,
                        "PingStatus": ping,
                        "LastPingDateTime": now_epoch() - (0 if ping == "Online" else 3600),
                        "AgentVersion": "3.3.0.0",
                        "IsLatestVersion": True,
                        "PlatformType": "Linux",
                        "PlatformName": "Debian GNU/Linux",
                        "ResourceType": "ManagedInstance",
                        "ComputerName": instance_id + ".local",
                        "IPAddress": "192.0.2.1",
                    }
                )
        start = int(body.get("NextToken") or 0)
        page = selected[start : start + max_results]
        answer = {"InstanceInformationList": page}
        if start + max_results < len(selected):
            answer["NextToken"] = str(start + max_results)
        return answer

    # -- SendCommand ------------------------------------------------------------
    def check_send(self, body):
        """SSM's own checks, before the command exists."""
        ids = body.get("InstanceIds", [])
        if not ids:
            raise ApiError(400, "InvalidInstanceId", "no instance ids (targets are not supported here)")
        for instance_id in ids:
            node = self.nodes.get(instance_id)
            if node is None or not node.get("online", True) or self.faults.invalid(instance_id):
                raise ApiError(400, "InvalidInstanceId", "Instances [[%s]] not in a valid state for account" % instance_id)
        params = body.get("Parameters", {})
        declared = self.document.get("parameters", {})
        for name in params:
            if name not in declared:
                raise ApiError(400, "InvalidParameters", "unknown parameter " + name)
        for name, spec in declared.items():
            values = params.get(name, [spec.get("default")] if "default" in spec else None)
            if values is None:
                raise ApiError(400, "InvalidParameters", "missing parameter " + name)
            for value in values:
                if "allowedValues" in spec and value not in spec["allowedValues"]:
                    raise ApiError(400, "InvalidParameters", "parameter %s: value not allowed" % name)
                if "allowedPattern" in spec and not re.fullmatch(spec["allowedPattern"], value):
                    raise ApiError(400, "InvalidParameters", "parameter %s: value does not match allowedPattern" % name)

    def accepted(self, body, command):
        """moto accepted the command: run it on every target node."""
        params = body.get("Parameters", {})
        for instance_id in body.get("InstanceIds", []):
            invocation = Invocation(
                command["CommandId"],
                instance_id,
                body.get("DocumentName", ""),
                body.get("Comment", ""),
                command.get("RequestedDateTime", now_epoch()),
            )
            with self.lock:
                self.invocations.append(invocation)
            if self.faults.hangs(instance_id):
                continue
            threading.Thread(target=self.run, args=(invocation, params), daemon=True).start()

    def render(self, params):
        step = self.document["mainSteps"][0]
        declared = self.document.get("parameters", {})
        lines = []
        for line in step["inputs"]["runCommand"]:
            for name, spec in declared.items():
                value = params.get(name, [spec.get("default", "")])[0]
                line = re.sub(r"\{\{\s*" + re.escape(name) + r"\s*\}\}", lambda _m: value, line)
            lines.append(line.replace("/usr/bin/aovis-agent", self.agent))
        return "\n".join(lines) + "\n", int(step["inputs"].get("timeoutSeconds", "3600"))

    def run(self, invocation, params):
        node = self.nodes[invocation.instance_id]
        script, timeout = self.render(params)
        # Like SSM Agent, the rendered script (parameters inlined) is saved on the host.
        with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as handle:
            handle.write(script)
            path = handle.name
        env = {
            "PATH": "/usr/bin:/bin",
            "AWS_SSM_INSTANCE_ID": invocation.instance_id,
            "AOVIS_STATE_DIR": node["state_dir"],
            "AOVIS_CONFIG_DIR": node["config_dir"],
        }
        try:
            done = subprocess.run(["sh", path], env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
            stdout, stderr, code = done.stdout, done.stderr, done.returncode
            status = "Success" if code == 0 else "Failed"
        except subprocess.TimeoutExpired as expired:
            stdout, stderr, code, status = expired.stdout or b"", expired.stderr or b"", -1, "TimedOut"
        finally:
            os.unlink(path)
        with self.lock:
            invocation.stdout = stdout.decode("utf-8", "replace")[:24000]
            invocation.stderr = stderr.decode("utf-8", "replace")[:24000]
            invocation.code = code
            invocation.status = status

    # -- ListCommandInvocations / GetCommandInvocation -------------------------
    def list_invocations(self, body):
        max_results = body.get("MaxResults", 50)
        if not 1 <= max_results <= 50:
            raise ApiError(400, "ValidationException", "MaxResults must be 1 to 50")
        with self.lock:
            selected = list(self.invocations)
        if body.get("CommandId"):
            selected = [i for i in selected if i.command_id == body["CommandId"]]
        if body.get("InstanceId"):
            selected = [i for i in selected if i.instance_id == body["InstanceId"]]
        for f in body.get("Filters", []):
            key, value = f.get("key"), f.get("value", "")
            if key == "InvokedAfter":
                selected = [i for i in selected if i.requested >= iso_to_epoch(value)]
            elif key == "InvokedBefore":
                selected = [i for i in selected if i.requested <= iso_to_epoch(value)]
            elif key == "DocumentName":
                selected = [i for i in selected if i.document == value]
            elif key == "Status":
                selected = [i for i in selected if i.status == value]
            else:
                raise ApiError(400, "InvalidFilterKey", "unsupported filter key %s" % key)
        start = int(body.get("NextToken") or 0)
        with self.lock:
            page = [i.to_json(body.get("Details", False)) for i in selected[start : start + max_results]]
        answer = {"CommandInvocations": page}
        if start + max_results < len(selected):
            answer["NextToken"] = str(start + max_results)
        return answer

    def get_invocation(self, body):
        with self.lock:
            for i in self.invocations:
                if i.command_id == body.get("CommandId") and i.instance_id == body.get("InstanceId"):
                    return {
                        "CommandId": i.command_id,
                        "InstanceId": i.instance_id,
                        "Comment": i.comment,
                        "DocumentName": i.document,
                        "PluginName": "aovisAgent",
                        "ResponseCode": i.code,
                        "Status": i.status,
                        "StatusDetails": i.status,
                        "StandardOutputContent": i.stdout,
                        "StandardErrorContent": i.stderr,
                    }
        raise ApiError(400, "InvocationDoesNotExist", "")

    def dump(self):
        with self.lock:
            return [
                dict(i.to_json(True), StandardOutputContent=i.stdout, StandardErrorContent=i.stderr)
                for i in self.invocations
            ]


class ApiError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def make_handler(fleet, moto):
    moto_url = urllib.parse.urlsplit(moto)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; without this, Nagle and delayed
        # ACKs add ~40 ms to every answer.
        disable_nagle_algorithm = True

        def log_message(self, *_args):
            pass

        def reply(self, status, body, content_type="application/x-amz-json-1.1", headers=()):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def error(self, err, query_protocol):
            if query_protocol:
                xml = (
                    "<ErrorResponse><Error><Type>%s</Type><Code>%s</Code><Message>%s</Message></Error>"
                    "<RequestId>%s</RequestId></ErrorResponse>"
                    % ("Receiver" if err.status >= 500 else "Sender", err.code, err.message, uuid.uuid4())
                )
                self.reply(err.status, xml.encode(), "text/xml")
            else:
                self.reply(err.status, {"__type": err.code, "message": err.message})

        def forward(self, body):
            conn = http.client.HTTPConnection(moto_url.hostname, moto_url.port, timeout=120)
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in ("connection", "keep-alive"):
                    conn.putheader(name, value)
            conn.endheaders()
            if body:
                conn.send(body)
            response = conn.getresponse()
            data = response.read()
            headers = [
                (k, v)
                for k, v in response.getheaders()
                if k.lower() not in ("content-length", "connection", "transfer-encoding", "content-type", "server", "date")
            ]
            conn.close()
            return response.status, data, response.getheader("Content-Type", "text/xml"), headers

        def do_GET(self):
            if self.path == "/_fakes/invocations":
                return self.reply(200, fleet.dump(), "application/json")
            self.do_POST()

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path == "/_fakes/faults":
                fleet.faults.set(json.loads(body or b"{}"))
                return self.reply(200, {"ok": True}, "application/json")
            target = self.headers.get("X-Amz-Target", "")
            operation = target.split(".")[-1] if target else ""
            query_protocol = not target
            if query_protocol:
                form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
                operation = form.get("Action", [""])[0]
                role_arn = form.get("RoleArn", [""])[0]
                if operation == "AssumeRole" and fleet.faults.denies(role_arn):
                    message = "User is not authorized to perform: sts:AssumeRole on resource: " + role_arn
                    return self.error(ApiError(403, "AccessDenied", message), True)
            time.sleep(fleet.faults.latency())
            injected = fleet.faults.check(operation)
            if injected:
                return self.error(ApiError(*injected), query_protocol)
            try:
                if target.startswith("AmazonSSM."):
                    parsed = json.loads(body or b"{}")
                    if operation == "DescribeInstanceInformation":
                        return self.reply(200, fleet.describe(parsed))
                    if operation == "ListCommandInvocations":
                        return self.reply(200, fleet.list_invocations(parsed))
                    if operation == "GetCommandInvocation":
                        return self.reply(200, fleet.get_invocation(parsed))
                    if operation == "SendCommand":
                        fleet.check_send(parsed)
                        status, data, content_type, headers = self.forward(body)
                        if status == 200:
                            fleet.accepted(parsed, json.loads(data)["Command"])
                            if fleet.faults.lose_answer(parsed.get("InstanceIds", [])):
                                raise ApiError(500, "InternalServerError", "injected by ssm_nodes after the command was created")
                        return self.reply(status, data, content_type, headers)
                status, data, content_type, headers = self.forward(body)
                return self.reply(status, data, content_type, headers)
            except ApiError as err:
                return self.error(err, query_protocol)

    return Handler


class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that went away mid-answer (a test killed the rotator while a
        # request waited out its injected latency) is not an error of the fake.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--moto", required=True, help="moto's URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--listen", type=int, default=0, help="loopback port (0: a free one)")
    parser.add_argument("--nodes", required=True, help="JSON file listing the managed nodes")
    parser.add_argument("--agent", required=True, help="the aovis-agent binary standing in for /usr/bin/aovis-agent")
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument(
        "--document",
        default=os.path.join(here, "..", "..", "lambda-rotator", "ssm", "Aovis-DeliverCredentials.json"),
    )
    parser.add_argument("--faults", default="{}", help="initial faults, JSON")
    args = parser.parse_args()
    with open(args.nodes) as handle:
        nodes = json.load(handle)
    with open(args.document) as handle:
        document = json.load(handle)
    fleet = Fleet(nodes, os.path.abspath(args.agent), document)
    fleet.faults.set(json.loads(args.faults))
    server = Server(("127.0.0.1", args.listen), make_handler(fleet, args.moto))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
