"""Resolve credentials the way every botocore client (and boto3) does.

Usage: botocore_resolve.py [PROFILE]

With PROFILE (and AWS_CONFIG_FILE pointing at the config) it resolves that
profile, which for a profile with `credential_process` is botocore's
ProcessProvider. Without it, botocore's default chain decides from the
environment: the tests give a clean one, with empty config files and only the
variables of the provider under test (IMDS, container credentials).

Prints the resolved credentials and the provider's method as JSON and exits 0, or
prints the error's class and message and exits 3 (including when botocore finds no
credentials at all).
"""
import json
import sys

import botocore.exceptions
import botocore.session

profile = sys.argv[1] if len(sys.argv) > 1 else None
session = botocore.session.Session(profile=profile)
try:
    creds = session.get_credentials()
    if creds is None:
        print(json.dumps({"error": "NoCredentials", "message": "botocore found no credentials"}))
        sys.exit(3)
    frozen = creds.get_frozen_credentials()
except botocore.exceptions.BotoCoreError as err:
    print(json.dumps({"error": type(err).__name__, "message": str(err)}))
    sys.exit(3)
print(json.dumps({
    "method": creds.method,
    "AccessKeyId": frozen.access_key,
    "SecretAccessKey": frozen.secret_key,
    "SessionToken": frozen.token,
    "Expiration": creds._expiry_time.isoformat() if getattr(creds, "_expiry_time", None) else None,
}))
