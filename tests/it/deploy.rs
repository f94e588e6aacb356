//! The AWS side as shipped: the CloudFormation template
//! (`deploy/cloudformation/aovis.yaml`), what its policies must never allow, that
//! what it deploys is what the repo ships, that the function it defines works
//! as Lambda would run it, and that the docs' links lead somewhere.
//!
//! The template is YAML with CloudFormation's short-form tags, so
//! `tests/py/cfn_render.py` reads it with cfn-lint's own decoder and resolves it
//! for a set of parameters as CloudFormation would (names and ARNs as a stack
//! `aovis` in account 111122223333 would get them). The checks below then look
//! at the policies as IAM would see them, for several sets of parameters, so a
//! branch of an `!If` cannot hide a grant.
//!
//! | test | proves |
//! |---|---|
//! | `template_policies_grant_nothing_forbidden` | no `Action: "*"`, no `iam:*`, no `sts:AssumeRole` on a wildcard, no `ssm:SendCommand` on `AWS-RunShellScript`, `*` or any other document, nor on nodes without the tag condition, no parameter access outside `/aovis/` |
//! | `the_rule_book_catches_each_forbidden_grant` | each of those rules fires on a statement that breaks it |
//! | `rotator_role_grants_exactly_the_target_roles_and_the_document` | the assumable roles, the one document, the tag condition and the only `*` grants, exactly |
//! | `rotator_role_grants_exactly_the_calls_the_rotator_makes` | least privilege both ways, against the SDK calls in `lambda-rotator/src` |
//! | `embedded_document_equals_the_repo_json` | one source of truth for the SSM document |
//! | `scheduler_role_may_only_invoke_the_rotator` | the schedule's role: `lambda:InvokeFunction` on the function only |
//! | `example_target_role_trusts_only_the_rotator` | the example role's trust policy |
//! | `rotator_function_matches_the_package_and_the_metrics` | runtime, handler, architecture (as `scripts/package-lambda` builds), concurrency 1, logs, the alarm's metric |
//! | `template_config_is_accepted_by_the_rotator` | the TOML the stack gives the function is valid for the real rotator |
//! | `stack_function_delivers_in_lambda_mode` | the rotator as `bootstrap` under a Lambda Runtime API stand-in, with the stack's environment and the schedule's input, delivers to a tagged node and emits the alarms' metrics |
//! | `docs_links_and_commands_resolve` | `docs/*.md` links and `scripts/...` mentions resolve |
//!
//! `forbidden_grants` is the rule book; `the_rule_book_catches_each_forbidden_grant`
//! proves each rule fires, so a passing template check means something.

use std::process::Command;

use serde_json::{json, Value};

use crate::support::{py_script, python, repo_root, text};

const TEMPLATE: &str = "deploy/cloudformation/aovis.yaml";
const DOCUMENT: &str = "lambda-rotator/ssm/Aovis-DeliverCredentials.json";
const ACCOUNT: &str = "111122223333";
const DOCUMENT_ARN: &str = "arn:aws:ssm:us-east-1:111122223333:document/Aovis-DeliverCredentials";
const APP_A: &str = "arn:aws:iam::111122223333:role/app-a";
const APP_B: &str = "arn:aws:iam::111122223333:role/app-b";

/// The parameter sets every policy check runs over: the defaults, a list of
/// target roles, and a separate config parameter with an alarm topic (every
/// condition of the template both ways).
fn scenarios() -> Vec<(&'static str, Value)> {
    vec![
        ("defaults", json!({"CodeS3Bucket": "code-bucket"})),
        (
            "two target roles, another tag",
            json!({"CodeS3Bucket": "code-bucket",
                   "TargetRoleArns": format!("{APP_A},{APP_B}"),
                   "TargetTagKey": "team", "TargetTagValue": "payments"}),
        ),
        (
            "config parameter and alarm topic",
            json!({"CodeS3Bucket": "code-bucket",
                   "RotatorConfigParameter": "/aovis/rotator/config",
                   "AlarmTopicArn": "arn:aws:sns:us-east-1:111122223333:ops"}),
        ),
    ]
}

/// The template resolved for `parameters` (see the module doc).
fn render(parameters: &Value) -> Value {
    let output = Command::new(python())
        .arg(py_script("cfn_render.py"))
        .arg(repo_root().join(TEMPLATE))
        .arg(parameters.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cfn_render.py failed: {}",
        text(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn resources(template: &Value) -> &serde_json::Map<String, Value> {
    template["Resources"].as_object().unwrap()
}

fn resource<'a>(template: &'a Value, logical: &str) -> &'a Value {
    let found = &template["Resources"][logical];
    assert!(found.is_object(), "the template has no {logical}");
    found
}

/// A policy document as IAM reads it: CloudFormation accepts the document as
/// an object or as JSON text (the tag-conditioned policy is text, since a
/// condition key cannot be built with `!Sub`).
fn document(node: &Value) -> Value {
    match node {
        Value::String(json_text) => serde_json::from_str(json_text).unwrap(),
        other => other.clone(),
    }
}

/// Every identity policy statement in the template, with where it is.
fn statements(template: &Value) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for (logical, res) in resources(template) {
        let props = &res["Properties"];
        let mut documents = Vec::new();
        match res["Type"].as_str().unwrap() {
            "AWS::IAM::Role" => {
                for policy in props["Policies"].as_array().into_iter().flatten() {
                    let name = policy["PolicyName"].as_str().unwrap();
                    documents.push((format!("{logical}/{name}"), &policy["PolicyDocument"]));
                }
                assert!(
                    props.get("ManagedPolicyArns").is_none(),
                    "{logical} attaches managed policies this test cannot see"
                );
            }
            "AWS::IAM::RolePolicy" | "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy" => {
                documents.push((logical.clone(), &props["PolicyDocument"]));
            }
            "AWS::IAM::User"
            | "AWS::IAM::Group"
            | "AWS::IAM::UserPolicy"
            | "AWS::IAM::GroupPolicy" => {
                panic!("{logical}: the template must create no IAM users or groups")
            }
            _ => {}
        }
        for (place, doc) in documents {
            for statement in as_list(&document(doc)["Statement"]) {
                found.push((place.clone(), statement));
            }
        }
    }
    found
}

/// IAM's "a string or a list of strings" as a list.
fn as_list(node: &Value) -> Vec<Value> {
    match node {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

fn strings(node: &Value) -> Vec<String> {
    as_list(node)
        .into_iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// IAM's wildcard match (`*` any run, `?` one character), case-insensitive as
/// action names are.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// Whether one of a statement's actions covers `action`.
fn allows_action(statement: &Value, action: &str) -> bool {
    strings(&statement["Action"])
        .iter()
        .any(|a| glob(a, action))
}

/// The rule book: what no Allow statement of the template may grant. Returns
/// one line per violation, empty when the statement is acceptable.
fn forbidden_grants(statement: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if statement["Effect"] != "Allow" {
        return found;
    }
    if statement.get("NotAction").is_some() || statement.get("NotResource").is_some() {
        found.push("Allow with NotAction/NotResource grants everything not listed".to_owned());
    }
    let actions = strings(&statement["Action"]);
    let resources = strings(&statement["Resource"]);
    for action in &actions {
        if action == "*" || action.ends_with(":*") {
            found.push(format!(
                "Action {action} is a wildcard over a whole service (or all)"
            ));
        }
        if action.to_ascii_lowercase().starts_with("iam:") {
            found.push(format!("Action {action}: no IAM permissions at all"));
        }
    }
    if allows_action(statement, "sts:AssumeRole") {
        for resource in &resources {
            if resource.contains('*') {
                found.push(format!("sts:AssumeRole on {resource}"));
            }
        }
    }
    if allows_action(statement, "ssm:SendCommand") {
        let tag_condition = statement["Condition"]["StringEquals"]
            .as_object()
            .is_some_and(|c| c.keys().any(|k| k.starts_with("ssm:resourceTag/")));
        for resource in &resources {
            let arn: Vec<&str> = resource.splitn(6, ':').collect();
            let kind = arn.get(5).copied().unwrap_or("");
            if resource == "*" {
                found.push("ssm:SendCommand on *".to_owned());
            } else if let Some(name) = kind.strip_prefix("document/") {
                if name != "Aovis-DeliverCredentials" {
                    found.push(format!("ssm:SendCommand on document {name}"));
                }
            } else if kind.starts_with("managed-instance/") || kind.starts_with("instance/") {
                if !tag_condition {
                    found.push(format!(
                        "ssm:SendCommand on {resource} without the tag condition"
                    ));
                }
            } else {
                found.push(format!("ssm:SendCommand on unexpected resource {resource}"));
            }
        }
    }
    for parameter_call in [
        "ssm:PutParameter",
        "ssm:DeleteParameter",
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:GetParametersByPath",
    ] {
        if allows_action(statement, parameter_call) {
            for resource in &resources {
                if !resource
                    .starts_with(&format!("arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/aovis/"))
                {
                    found.push(format!("{parameter_call} outside /aovis/: {resource}"));
                }
            }
        }
    }
    found
}

#[test]
fn template_policies_grant_nothing_forbidden() {
    for (scenario, parameters) in scenarios() {
        let template = render(&parameters);
        let all = statements(&template);
        assert!(
            all.len() >= 8,
            "{scenario}: too few statements found: {all:?}"
        );
        let violations: Vec<String> = all
            .iter()
            .flat_map(|(place, s)| {
                forbidden_grants(s)
                    .into_iter()
                    .map(move |v| format!("{place}: {v}"))
            })
            .collect();
        assert!(violations.is_empty(), "{scenario}: {violations:#?}");
    }
}

#[test]
fn the_rule_book_catches_each_forbidden_grant() {
    let doc = |name: &str| format!("arn:aws:ssm:us-east-1:{ACCOUNT}:document/{name}");
    let nodes = format!("arn:aws:ssm:us-east-1:{ACCOUNT}:managed-instance/*");
    let cases = [
        (
            "Action *",
            json!({"Effect": "Allow", "Action": "*", "Resource": "*"}),
            "Action * is a wildcard",
        ),
        (
            "iam:PassRole",
            json!({"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}),
            "no IAM permissions",
        ),
        (
            "iam:*",
            json!({"Effect": "Allow", "Action": ["iam:*"], "Resource": "*"}),
            "no IAM permissions",
        ),
        (
            "sts:AssumeRole on *",
            json!({"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}),
            "sts:AssumeRole on *",
        ),
        (
            "sts:Assume* on a role path wildcard",
            json!({"Effect": "Allow", "Action": "sts:Assume*", "Resource": format!("arn:aws:iam::{ACCOUNT}:role/*")}),
            "sts:AssumeRole on arn:aws:iam::111122223333:role/*",
        ),
        (
            "SendCommand on AWS-RunShellScript",
            json!({"Effect": "Allow", "Action": "ssm:SendCommand", "Resource": doc("AWS-RunShellScript")}),
            "ssm:SendCommand on document AWS-RunShellScript",
        ),
        (
            "SendCommand on every document",
            json!({"Effect": "Allow", "Action": "ssm:SendCommand", "Resource": doc("*")}),
            "ssm:SendCommand on document *",
        ),
        (
            "SendCommand on *",
            json!({"Effect": "Allow", "Action": "ssm:SendCommand", "Resource": "*"}),
            "ssm:SendCommand on *",
        ),
        (
            "ssm:Send* on nodes without the tag condition",
            json!({"Effect": "Allow", "Action": "ssm:Send*", "Resource": nodes}),
            "without the tag condition",
        ),
        (
            "ssm:*",
            json!({"Effect": "Allow", "Action": "ssm:*", "Resource": doc("Aovis-DeliverCredentials")}),
            "wildcard over a whole service",
        ),
        (
            "s3:*",
            json!({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"}),
            "wildcard over a whole service",
        ),
        (
            "NotAction",
            json!({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}),
            "NotAction",
        ),
        (
            "GetParameters on every parameter",
            json!({"Effect": "Allow", "Action": "ssm:GetParameters", "Resource": format!("arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/*")}),
            "ssm:GetParameters outside /aovis/",
        ),
        (
            "PutParameter outside the prefix",
            json!({"Effect": "Allow", "Action": "ssm:PutParameter", "Resource": format!("arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/*")}),
            "ssm:PutParameter outside /aovis/",
        ),
    ];
    for (name, statement, expected) in cases {
        let found = forbidden_grants(&statement);
        assert!(
            found.iter().any(|v| v.contains(expected)),
            "{name}: expected a violation containing {expected:?}, got {found:?}"
        );
    }
    // And a Deny is never a grant.
    assert!(
        forbidden_grants(&json!({"Effect": "Deny", "Action": "*", "Resource": "*"})).is_empty()
    );
}

/// The rotator may assume exactly the example role plus the roles it is given,
/// and send exactly one document, to nodes carrying exactly the target tag.
#[test]
fn rotator_role_grants_exactly_the_target_roles_and_the_document() {
    let cases = [
        (
            "defaults",
            json!({"CodeS3Bucket": "b"}),
            vec![],
            ("aovis", "rotate"),
        ),
        (
            "two roles",
            json!({"CodeS3Bucket": "b", "TargetRoleArns": format!("{APP_A},{APP_B}"),
                   "TargetTagKey": "team", "TargetTagValue": "payments"}),
            vec![APP_A, APP_B],
            ("team", "payments"),
        ),
    ];
    for (name, parameters, extra_roles, (tag_key, tag_value)) in cases {
        let template = render(&parameters);
        let example = resource(&template, "ExampleTargetRole")["Arn"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut expected_roles = vec![example];
        expected_roles.extend(extra_roles.iter().map(|r| (*r).to_owned()));

        let rotator: Vec<Value> = statements(&template)
            .into_iter()
            .filter(|(place, _)| place.starts_with("Rotator"))
            .map(|(_, s)| s)
            .collect();
        let mut assumable = Vec::new();
        let mut documents = Vec::new();
        let mut node_conditions = Vec::new();
        for s in &rotator {
            if allows_action(s, "sts:AssumeRole") {
                assumable.extend(strings(&s["Resource"]));
            }
            if allows_action(s, "ssm:SendCommand") {
                let resources = strings(&s["Resource"]);
                if resources.iter().any(|r| r.contains(":document/")) {
                    documents.extend(resources);
                } else {
                    node_conditions.push((resources, s["Condition"].clone()));
                }
            }
        }
        assert_eq!(assumable, expected_roles, "{name}: assumable roles");
        assert_eq!(
            documents,
            vec![DOCUMENT_ARN.to_owned()],
            "{name}: documents"
        );
        assert_eq!(
            node_conditions,
            vec![(
                vec![
                    format!("arn:aws:ssm:us-east-1:{ACCOUNT}:managed-instance/*"),
                    format!("arn:aws:ec2:us-east-1:{ACCOUNT}:instance/*"),
                ],
                json!({"StringEquals": {format!("ssm:resourceTag/{tag_key}"): tag_value}})
            )],
            "{name}: nodes"
        );
        // The read-only polling calls are the only grant on "*".
        for s in &rotator {
            if strings(&s["Resource"]).contains(&"*".to_owned()) {
                let mut actions = strings(&s["Action"]);
                actions.sort();
                assert_eq!(
                    actions,
                    [
                        "ssm:DescribeInstanceInformation",
                        "ssm:ListCommandInvocations"
                    ],
                    "{name}: only the polling calls may name *"
                );
            }
        }
        // The execution role is for Lambda only.
        let trust = &resource(&template, "RotatorRole")["Properties"]["AssumeRolePolicyDocument"];
        assert_eq!(
            trust["Statement"][0]["Principal"],
            json!({"Service": "lambda.amazonaws.com"})
        );
        assert_eq!(as_list(&trust["Statement"]).len(), 1);
    }
}

#[test]
fn embedded_document_equals_the_repo_json() {
    let template = render(&json!({"CodeS3Bucket": "b"}));
    let embedded = &resource(&template, "DeliverDocument")["Properties"];
    let file: Value =
        serde_json::from_slice(&std::fs::read(repo_root().join(DOCUMENT)).unwrap()).unwrap();
    assert_eq!(
        embedded["Content"], file,
        "{TEMPLATE} and {DOCUMENT} differ: run scripts/sync-template-document"
    );
    assert_eq!(embedded["Name"], "Aovis-DeliverCredentials");
    assert_eq!(embedded["DocumentType"], "Command");
}

#[test]
fn scheduler_role_may_only_invoke_the_rotator() {
    for (scenario, parameters) in scenarios() {
        let template = render(&parameters);
        let function = resource(&template, "RotatorFunction")["Arn"]
            .as_str()
            .unwrap()
            .to_owned();
        let role = resource(&template, "SchedulerRole");
        let trust = &role["Properties"]["AssumeRolePolicyDocument"]["Statement"];
        assert_eq!(as_list(trust).len(), 1, "{scenario}");
        assert_eq!(
            trust[0]["Principal"],
            json!({"Service": "scheduler.amazonaws.com"})
        );

        let granted: Vec<Value> = statements(&template)
            .into_iter()
            .filter(|(place, _)| place.starts_with("SchedulerRole"))
            .map(|(_, s)| s)
            .collect();
        assert_eq!(granted.len(), 1, "{scenario}: {granted:?}");
        assert_eq!(strings(&granted[0]["Action"]), ["lambda:InvokeFunction"]);
        assert_eq!(
            strings(&granted[0]["Resource"]),
            [function.clone(), format!("{function}:*")]
        );

        let schedule = &resource(&template, "RotationSchedule")["Properties"];
        assert_eq!(schedule["Target"]["Arn"], function.as_str());
        assert_eq!(schedule["Target"]["RoleArn"], role["Arn"]);
        assert!(
            schedule["Target"]["RetryPolicy"]["MaximumRetryAttempts"]
                .as_u64()
                .unwrap()
                > 0
        );
        assert_eq!(schedule["ScheduleExpression"], "rate(20 minutes)");
    }
}

#[test]
fn example_target_role_trusts_only_the_rotator() {
    let template = render(&json!({"CodeS3Bucket": "b"}));
    let rotator = resource(&template, "RotatorRole")["Arn"].clone();
    let trust = &resource(&template, "ExampleTargetRole")["Properties"]["AssumeRolePolicyDocument"];
    let statements = as_list(&trust["Statement"]);
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0]["Principal"], json!({"AWS": rotator}));
    assert_eq!(statements[0]["Action"], "sts:AssumeRole");
    assert_eq!(
        resource(&template, "ExampleTargetRole")["Properties"]["MaxSessionDuration"],
        3600
    );
}

/// What the runtime, the package and the alarms rely on: the function is the
/// `bootstrap` of scripts/package-lambda (x86_64), one round at a time, its logs
/// kept, and the alarm watches the metric the rotator emits.
#[test]
fn rotator_function_matches_the_package_and_the_metrics() {
    let template = render(&json!({"CodeS3Bucket": "b"}));
    let function = &resource(&template, "RotatorFunction");
    let props = &function["Properties"];
    assert_eq!(props["Runtime"], "provided.al2023");
    assert_eq!(props["Handler"], "bootstrap");
    assert_eq!(props["Architectures"], json!(["x86_64"]));
    let package = std::fs::read_to_string(repo_root().join("scripts/package-lambda")).unwrap();
    assert!(package.contains("--target \"x86_64-unknown-linux-gnu.$glibc\""));
    assert_eq!(props["ReservedConcurrentExecutions"], 1);
    assert!(props["Timeout"].as_u64().unwrap() >= 300);
    assert!((128..=512).contains(&props["MemorySize"].as_u64().unwrap()));

    let log_group = &resource(&template, "RotatorLogGroup");
    assert_eq!(
        props["LoggingConfig"]["LogGroup"],
        log_group["PhysicalName"]
    );
    assert!(log_group["Properties"]["RetentionInDays"].as_u64().unwrap() > 0);

    let alarm = &resource(&template, "HostsFailedAlarm")["Properties"];
    assert_eq!(alarm["Namespace"], "Aovis");
    assert_eq!(alarm["MetricName"], "HostsFailed");
    assert_eq!(
        alarm["Dimensions"],
        json!([{"Name": "Rotator", "Value": function["PhysicalName"]}])
    );
}

/// The AWS operations the rotator might call, as the SDK names them in Rust
/// (`client.describe_document()`) and as IAM names their permission.
const OPERATIONS: &[(&str, &str)] = &[
    ("add_tags_to_resource", "ssm:AddTagsToResource"),
    ("assume_role", "sts:AssumeRole"),
    ("cancel_command", "ssm:CancelCommand"),
    ("delete_parameter", "ssm:DeleteParameter"),
    ("delete_parameters", "ssm:DeleteParameters"),
    ("describe_document", "ssm:DescribeDocument"),
    (
        "describe_instance_information",
        "ssm:DescribeInstanceInformation",
    ),
    ("describe_parameters", "ssm:DescribeParameters"),
    ("get_caller_identity", "sts:GetCallerIdentity"),
    ("get_command_invocation", "ssm:GetCommandInvocation"),
    ("get_document", "ssm:GetDocument"),
    ("get_parameter", "ssm:GetParameter"),
    ("get_parameters", "ssm:GetParameters"),
    ("get_parameters_by_path", "ssm:GetParametersByPath"),
    ("list_command_invocations", "ssm:ListCommandInvocations"),
    ("list_commands", "ssm:ListCommands"),
    ("list_tags_for_resource", "ssm:ListTagsForResource"),
    ("put_parameter", "ssm:PutParameter"),
    ("send_command", "ssm:SendCommand"),
    ("tag_session", "sts:TagSession"),
];

/// The IAM actions of the SDK calls in the rotator's source (`.op()` for each
/// operation of [`OPERATIONS`]).
fn rotator_calls() -> Vec<&'static str> {
    let mut source = String::new();
    for entry in std::fs::read_dir(repo_root().join("lambda-rotator/src")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            source.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    let mut used: Vec<&str> = OPERATIONS
        .iter()
        .filter(|(op, _)| source.contains(&format!(".{op}()")))
        .map(|(_, action)| *action)
        .collect();
    used.sort_unstable();
    used
}

/// Least privilege both ways: the rotator's role grants every call its code
/// makes (a round never dies on AccessDenied after deploying), and nothing it
/// does not make. `ssm:GetParameter` is the Lambda reading its own config,
/// granted only when `RotatorConfigParameter` is set.
#[test]
fn rotator_role_grants_exactly_the_calls_the_rotator_makes() {
    let used = rotator_calls();
    assert!(
        used.contains(&"ssm:SendCommand"),
        "no SDK call found in lambda-rotator/src: {used:?}"
    );
    for (scenario, parameters) in scenarios() {
        let template = render(&parameters);
        let with_config = template["Conditions"]["HasConfigParameter"] == true;
        let mut granted: Vec<String> = statements(&template)
            .into_iter()
            .filter(|(place, _)| place.starts_with("Rotator"))
            .flat_map(|(_, s)| strings(&s["Action"]))
            .filter(|a| !a.starts_with("logs:"))
            .collect();
        granted.sort();
        granted.dedup();
        let mut expected: Vec<String> = used
            .iter()
            .filter(|a| with_config || **a != "ssm:GetParameter")
            .map(|a| (*a).to_owned())
            .collect();
        expected.sort();
        assert_eq!(
            granted, expected,
            "{scenario}: granted (left) vs called (right)"
        );
    }
}

/// The configuration the stack gives the function (`AOVIS_ROTATOR_CONFIG`,
/// rendered from the template's parameters) is one the real rotator accepts.
/// It runs against moto without the document, so the round stops at its
/// preflight: exit 1 with the document named, not exit 2 (refused config).
#[test]
fn template_config_is_accepted_by_the_rotator() {
    let moto = crate::support::moto::MotoServer::start(1000);
    let dir = tempfile::tempdir().unwrap();
    for (scenario, parameters) in scenarios() {
        let template = render(&parameters);
        let variables =
            &resource(&template, "RotatorFunction")["Properties"]["Environment"]["Variables"];
        let Some(config) = variables["AOVIS_ROTATOR_CONFIG"].as_str() else {
            assert_eq!(
                variables["AOVIS_ROTATOR_CONFIG_PARAMETER"],
                "/aovis/rotator/config"
            );
            continue;
        };
        let path = dir.path().join("rotator.toml");
        std::fs::write(&path, config).unwrap();
        let output = Command::new(crate::support::bin("aovis-rotator"))
            .args(["rotate", "--config"])
            .arg(&path)
            .env_clear()
            .env("AWS_ENDPOINT_URL", moto.url())
            .env("AWS_ACCESS_KEY_ID", "AKIAAOVISDEPLOYTEST0")
            .env("AWS_SECRET_ACCESS_KEY", "deploy-test-not-a-secret")
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{scenario}: {stderr}");
        assert!(
            stderr.contains(
                "SSM document `Aovis-DeliverCredentials` is not usable in region us-east-1"
            ),
            "{scenario}: {stderr}"
        );
    }
}

/// The stack's function end to end, as Lambda would run it: the rotator binary
/// as `bootstrap` under a Lambda Runtime API stand-in (`tests/fakes/lambda_runtime_api.py`),
/// with exactly the environment the template gives the function, invoked with
/// the schedule's `Input`, against moto holding the template's document, and a
/// managed node carrying the stack's target tag (`tests/fakes/ssm_nodes.py` plays
/// its SSM Agent and runs the real `aovis-agent`). The invocation succeeds, the
/// node holds the example role for the template's profile, and the metrics carry
/// the `Rotator` dimension the alarms watch.
#[test]
fn stack_function_delivers_in_lambda_mode() {
    use crate::support::ssm_nodes::{NodeSpec, SsmNodes};

    let template = render(&json!({"CodeS3Bucket": "code-bucket"}));
    let function = resource(&template, "RotatorFunction");
    let function_name = function["PhysicalName"].as_str().unwrap();
    let variables = function["Properties"]["Environment"]["Variables"]
        .as_object()
        .unwrap();
    let schedule_input = resource(&template, "RotationSchedule")["Properties"]["Target"]["Input"]
        .as_str()
        .unwrap()
        .to_owned();

    // moto, with the rotator's identity and the template's own document.
    let dir = tempfile::tempdir().unwrap();
    let document = dir.path().join("document.json");
    std::fs::write(
        &document,
        resource(&template, "DeliverDocument")["Properties"]["Content"].to_string(),
    )
    .unwrap();
    let moto = crate::support::moto::MotoServer::start(4);
    let setup = Command::new(python())
        .arg(repo_root().join("tests/fakes/rotator_moto_setup.py"))
        .arg(moto.url())
        .arg(&document)
        .output()
        .unwrap();
    assert!(setup.status.success(), "setup: {}", text(&setup.stderr));
    let identity: Value = serde_json::from_slice(&setup.stdout).unwrap();

    let instance = "mi-0d0e0f1a2b3c4d5e6";
    let tag_key = template["Parameters"]["TargetTagKey"].as_str().unwrap();
    let tag_value = template["Parameters"]["TargetTagValue"].as_str().unwrap();
    assert_eq!((tag_key, tag_value), ("aovis", "rotate"));
    let nodes = SsmNodes::start(
        &moto.url(),
        &[NodeSpec {
            instance_id: instance,
            online: true,
            tags: &[("aovis", "rotate")],
        }],
        "{}",
    );

    let mut command = Command::new(python());
    command
        .arg(repo_root().join("tests/fakes/lambda_runtime_api.py"))
        .args(["--deadline-ms", "120000"])
        .arg(&schedule_input)
        .arg("--")
        .arg(crate::support::bin("aovis-rotator"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_FUNCTION_NAME", function_name)
        .env("AWS_ENDPOINT_URL_SSM", nodes.url())
        .env("AWS_ENDPOINT_URL_STS", moto.url())
        .env("AWS_REGION", "us-east-1")
        .env(
            "AWS_ACCESS_KEY_ID",
            identity["AccessKeyId"].as_str().unwrap(),
        )
        .env(
            "AWS_SECRET_ACCESS_KEY",
            identity["SecretAccessKey"].as_str().unwrap(),
        );
    for (name, value) in variables {
        command.env(name, value.as_str().unwrap());
    }
    let output = command.output().unwrap();
    let log = text(&output.stderr);
    assert!(output.status.success(), "runtime stand-in: {log}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["kind"], "response", "{result}\n{log}");
    let counts = &result["body"]["counts"];
    assert_eq!(counts["targeted"], 1, "{result}");
    assert_eq!(counts["enrolled_and_delivered"], 1, "{result}");

    // The metrics record names the function, as the alarms' dimension does.
    let emf = log
        .lines()
        .find(|l| l.contains("\"CloudWatchMetrics\""))
        .unwrap_or_else(|| panic!("no EMF record in the function's log: {log}"));
    let emf: Value = serde_json::from_str(emf).unwrap();
    assert_eq!(emf["Rotator"], function_name);
    assert_eq!(emf["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Aovis");
    assert_eq!(emf["HostsFailed"], 0);
    for alarm in ["HostsFailedAlarm", "RoundsMissingAlarm"] {
        let props = &resource(&template, alarm)["Properties"];
        assert_eq!(props["Dimensions"][0]["Value"], function_name, "{alarm}");
        assert!(
            emf.get(props["MetricName"].as_str().unwrap()).is_some(),
            "{alarm}"
        );
    }

    // The host holds the example role for the template's profile.
    let cache_path = nodes.host(instance).cache_path("default");
    let cache: Value = serde_json::from_slice(&std::fs::read(&cache_path).unwrap()).unwrap();
    assert_eq!(
        cache["Aovis"]["role_arn"],
        resource(&template, "ExampleTargetRole")["Arn"]
    );
    assert_eq!(cache["Aovis"]["instance_id"], instance);
    let secret = cache["SecretAccessKey"].as_str().unwrap();
    assert!(
        !log.contains(secret),
        "the function's log holds the secret key"
    );
    assert!(
        !result.to_string().contains(secret),
        "the result holds the secret key"
    );
}

/// GitHub's anchor of a Markdown heading: lower case, punctuation dropped,
/// spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The docs send readers to real places: every relative link names a file of
/// the repo and, with `#...`, a heading of it; every `scripts/...` command they
/// mention exists.
#[test]
fn docs_links_and_commands_resolve() {
    let docs = repo_root().join("docs");
    let mut problems = Vec::new();
    let mut pages = 0;
    for entry in std::fs::read_dir(&docs).unwrap() {
        let page = entry.unwrap().path();
        if page.extension().is_none_or(|e| e != "md") {
            continue;
        }
        pages += 1;
        let name = page.file_name().unwrap().to_string_lossy().into_owned();
        let body = std::fs::read_to_string(&page).unwrap();
        for (start, _) in body.match_indices("](") {
            let rest = &body[start + 2..];
            let target = &rest[..rest.find(')').unwrap()];
            if target.starts_with("http") {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let file = if file.is_empty() {
                page.clone()
            } else {
                docs.join(file)
            };
            let Ok(linked) = std::fs::read_to_string(&file) else {
                problems.push(format!("{name}: link to missing {target}"));
                continue;
            };
            if !fragment.is_empty()
                && !linked
                    .lines()
                    .filter_map(|l| l.strip_prefix('#'))
                    .any(|h| anchor(h.trim_start_matches('#')) == fragment)
            {
                problems.push(format!("{name}: no heading for #{fragment} in {target}"));
            }
        }
        for (start, _) in body.match_indices("scripts/") {
            let script: String = body[start..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
                .collect();
            if !repo_root().join(&script).is_file() {
                problems.push(format!("{name}: mentions missing {script}"));
            }
        }
    }
    assert!(pages >= 4, "expected the four docs pages");
    assert!(problems.is_empty(), "{problems:#?}");
}
