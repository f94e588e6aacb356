"""Render a CloudFormation template for given parameters, the way CloudFormation
would resolve it, and print the result as JSON.

Usage: cfn_render.py TEMPLATE PARAMETERS_JSON

Why: the template is YAML with short-form tags (!Ref, !Sub, !If ...), which
only a CloudFormation-aware decoder reads; cfn-lint's decoder (`cfnlint.decode`,
in the test venv) is the one its linter uses. The tests then check the rendered
policies in Rust, for each set of parameters, as IAM would see them.

What it fakes, and why: CloudFormation itself is not here, so resources get the
names and ARNs CloudFormation would give them in stack `aovis` of account
111122223333 in us-east-1 (`<stack>-<LogicalId>`, or the resource's own name
property). Supported: Ref, Fn::GetAtt (Arn), Fn::Sub (string form), Fn::Join,
Fn::Split, Fn::If, conditions (Fn::Equals, Fn::Not, Fn::And, Fn::Or) and
AWS::NoValue. Anything else fails loudly rather than render a guess.
"""
import json
import re
import sys

from cfnlint.decode import decode

PARTITION, REGION, ACCOUNT, STACK = "aws", "us-east-1", "111122223333", "aovis"
PSEUDO = {
    "AWS::Partition": PARTITION,
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::StackName": STACK,
    "AWS::URLSuffix": "amazonaws.com",
}
NO_VALUE = object()


class Renderer:
    def __init__(self, template, given):
        self.template = template
        self.params = {}
        for name, spec in template.get("Parameters", {}).items():
            if name in given:
                value = given[name]
            elif "Default" in spec:
                value = spec["Default"]
            else:
                raise SystemExit(f"cfn_render: parameter {name} has no value")
            if spec["Type"] == "CommaDelimitedList":
                value = [] if value == "" else [v.strip() for v in str(value).split(",")]
            self.params[name] = value
        unknown = set(given) - set(self.params)
        if unknown:
            raise SystemExit(f"cfn_render: unknown parameters {sorted(unknown)}")
        self.conditions = {}
        for name, expr in template.get("Conditions", {}).items():
            self.conditions[name] = bool(self.value(expr))

    def physical(self, logical):
        props = self.template["Resources"][logical].get("Properties", {})
        kind = self.template["Resources"][logical]["Type"]
        for key in ("Name", "RoleName", "FunctionName", "LogGroupName"):
            if key in props:
                return self.value(props[key])
        if kind == "AWS::Lambda::Function":
            return f"{STACK}-{logical}-AbC123"
        return f"{STACK}-{logical}"

    def arn(self, logical):
        kind = self.template["Resources"][logical]["Type"]
        name = self.physical(logical)
        if kind == "AWS::IAM::Role":
            return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}"
        if kind == "AWS::Lambda::Function":
            return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{name}"
        if kind == "AWS::Logs::LogGroup":
            return f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{name}:*"
        if kind == "AWS::Scheduler::Schedule":
            return f"arn:{PARTITION}:scheduler:{REGION}:{ACCOUNT}:schedule/default/{name}"
        raise SystemExit(f"cfn_render: no Arn for {kind}")

    def ref(self, name):
        if name in PSEUDO:
            return PSEUDO[name]
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.params:
            return self.params[name]
        if name in self.template["Resources"]:
            return self.physical(name)
        raise SystemExit(f"cfn_render: Ref to unknown {name}")

    def get_att(self, logical, attribute):
        if attribute != "Arn":
            raise SystemExit(f"cfn_render: GetAtt {logical}.{attribute} not supported")
        return self.arn(logical)

    def sub(self, text):
        def one(match):
            name = match.group(1)
            if "." in name:
                logical, attribute = name.split(".", 1)
                return self.get_att(logical, attribute)
            value = self.ref(name)
            if not isinstance(value, (str, int, float)):
                raise SystemExit(f"cfn_render: ${{{name}}} is not a scalar")
            return str(value)

        return re.sub(r"\$\{([A-Za-z0-9:._]+)\}", one, text)

    def value(self, node):
        if isinstance(node, list):
            out = [self.value(item) for item in node]
            return [item for item in out if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical, attribute)
            if key == "Fn::Sub":
                if not isinstance(arg, str):
                    raise SystemExit("cfn_render: only the string form of Fn::Sub is supported")
                return self.sub(arg)
            if key == "Fn::Join":
                sep, items = arg
                items = self.value(items)
                return sep.join(str(self.value(i)) for i in items)
            if key == "Fn::Split":
                sep, text = arg
                return self.value(text).split(sep)
            if key == "Fn::If":
                cond, yes, no = arg
                return self.value(yes if self.conditions[cond] else no)
            if key == "Fn::Equals":
                a, b = (self.value(x) for x in arg)
                return a == b
            if key == "Fn::Not":
                return not self.value(arg[0])
            if key == "Fn::And":
                return all(self.value(x) for x in arg)
            if key == "Fn::Or":
                return any(self.value(x) for x in arg)
            if key == "Condition":
                return self.conditions[arg]
            if key.startswith("Fn::"):
                raise SystemExit(f"cfn_render: {key} not supported")
        out = {}
        for key, item in node.items():
            item = self.value(item)
            if item is not NO_VALUE:
                out[key] = item
        return out


def main():
    path, given = sys.argv[1], json.loads(sys.argv[2])
    template, matches = decode(path)
    if template is None or matches:
        raise SystemExit(f"cfn_render: cannot decode {path}: {matches}")
    renderer = Renderer(template, given)
    resources = {}
    for logical, resource in template["Resources"].items():
        if "Condition" in resource and not renderer.conditions[resource["Condition"]]:
            continue
        rendered = {"Type": resource["Type"]}
        for key in ("Properties", "DependsOn"):
            if key in resource:
                rendered[key] = renderer.value(resource[key])
        rendered["Arn"] = renderer.arn(logical) if resource["Type"] in (
            "AWS::IAM::Role", "AWS::Lambda::Function", "AWS::Logs::LogGroup") else None
        rendered["PhysicalName"] = renderer.physical(logical)
        resources[logical] = rendered
    json.dump({"Parameters": renderer.params, "Conditions": renderer.conditions,
               "Resources": resources}, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
