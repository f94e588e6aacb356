"""Resolve credentials for a profile the way every botocore client does.

Usage: botocore_resolve.py PROFILE   (with AWS_CONFIG_FILE pointing at the config)

Goes through botocore's own credential chain, which for a profile with
`credential_process` is its ProcessProvider. Prints the resolved credentials as
JSON and exits 0, or prints the exception's class and message and exits 3.
"""
import json
import sys

import botocore.exceptions
import botocore.session

profile = sys.argv[1]
session = botocore.session.Session(profile=profile)
try:
    creds = session.get_credentials()
    frozen = creds.get_frozen_credentials()
except botocore.exceptions.BotoCoreError as err:
    print(json.dumps({"error": type(err).__name__, "message": str(err)}))
    sys.exit(3)
print(json.dumps({
    "method": creds.method,
    "AccessKeyId": frozen.access_key,
    "SecretAccessKey": frozen.secret_key,
    "SessionToken": frozen.token,
    "Expiration": creds._expiry_time.isoformat() if creds._expiry_time else None,
}))
