"""Set up an IAM user and a role on a fresh moto server, then assume the role.

Usage: moto_assume_role.py URL ROLE_NAME SESSION_NAME

The first four requests (create user, its key, its policy, the role) are the ones
the server lets through unsigned (INITIAL_NO_AUTH_ACTION_COUNT=4); AssumeRole is
signed with the user's new key and checked, and moto (5.2.5) checks the
role's trust policy admits that user. Prints the role ARN and the
credentials as one JSON object.
"""
import json
import sys

import boto3

url, role_name, session_name = sys.argv[1:4]
setup = dict(endpoint_url=url, region_name="us-east-1",
             aws_access_key_id="AKIAUNSIGNEDSETUP000", aws_secret_access_key="unused")
iam = boto3.client("iam", **setup)
user = iam.create_user(UserName="aovis-test-caller")["User"]
key = iam.create_access_key(UserName="aovis-test-caller")["AccessKey"]
iam.put_user_policy(
    UserName="aovis-test-caller", PolicyName="assume",
    PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
role = iam.create_role(
    RoleName=role_name,
    AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": user["Arn"]},
         "Action": "sts:AssumeRole"}]}))["Role"]
sts = boto3.client("sts", endpoint_url=url, region_name="us-east-1",
                   aws_access_key_id=key["AccessKeyId"],
                   aws_secret_access_key=key["SecretAccessKey"])
creds = sts.assume_role(RoleArn=role["Arn"], RoleSessionName=session_name,
                        DurationSeconds=3600)["Credentials"]
print(json.dumps({
    "role_arn": role["Arn"],
    "AccessKeyId": creds["AccessKeyId"],
    "SecretAccessKey": creds["SecretAccessKey"],
    "SessionToken": creds["SessionToken"],
    "Expiration": creds["Expiration"].isoformat(),
}))
