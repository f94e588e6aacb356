"""Resolve credentials through botocore's default chain, as every boto3 client does.

Usage: botocore_chain.py   (the environment decides: the tests give a clean one,
with empty config files and only the variables of the provider under test)

Prints the resolved credentials and the provider's method as JSON and exits 0, or
prints the error's class and message and exits 3 (including when botocore finds no
credentials at all).
"""
import json
import sys

import botocore.exceptions
import botocore.session

session = botocore.session.Session()
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
