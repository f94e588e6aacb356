"""Prepare a fresh moto server for a rotator round.

Usage: rotator_moto_setup.py URL DOCUMENT_JSON [PARAM_NAME=VALUE ...]

The first four requests (user, access key, user policy, role) are the ones moto
lets through unsigned (INITIAL_NO_AUTH_ACTION_COUNT=4); everything after is signed
with the new user's key and checked against its policy, as the rotator's calls
will be. Creates:
  * IAM user aovis-rotator-test allowed sts:AssumeRole and ssm:*;
  * roles aovis-onprem and aovis-denied whose trust policies admit that user
    (moto 5.2.5 does not evaluate trust policies nor resource-scoped IAM
    statements, so tests make AssumeRole on aovis-denied fail with ssm_nodes.py's
    "deny_roles" fault);
  * the SSM document Aovis-DeliverCredentials from DOCUMENT_JSON (us-east-1);
  * one String parameter per PARAM_NAME=VALUE.
Prints {"AccessKeyId", "SecretAccessKey", "role_arn", "denied_role_arn"}.
"""
import json
import sys

import boto3

url, document_path = sys.argv[1:3]
setup = dict(endpoint_url=url, region_name="us-east-1",
             aws_access_key_id="AKIAUNSIGNEDSETUP000", aws_secret_access_key="unused")
iam = boto3.client("iam", **setup)
user = iam.create_user(UserName="aovis-rotator-test")["User"]
key = iam.create_access_key(UserName="aovis-rotator-test")["AccessKey"]
iam.put_user_policy(
    UserName="aovis-rotator-test", PolicyName="rotator",
    PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["sts:AssumeRole", "ssm:*", "iam:CreateRole"], "Resource": "*"}]}))
role = iam.create_role(
    RoleName="aovis-onprem",
    AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": user["Arn"]}, "Action": "sts:AssumeRole"}]}))["Role"]
signed = dict(endpoint_url=url, region_name="us-east-1",
              aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
denied = boto3.client("iam", **signed).create_role(
    RoleName="aovis-denied",
    AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": user["Arn"]}, "Action": "sts:AssumeRole"}]}))["Role"]
ssm = boto3.client("ssm", **signed)
with open(document_path) as handle:
    ssm.create_document(Content=handle.read(), Name="Aovis-DeliverCredentials",
                        DocumentType="Command", DocumentFormat="JSON")
for pair in sys.argv[3:]:
    name, value = pair.split("=", 1)
    ssm.put_parameter(Name=name, Value=value, Type="String")
print(json.dumps({"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"],
                  "role_arn": role["Arn"], "denied_role_arn": denied["Arn"]}))
