"""Read and write moto's SSM records, signed with the test user's key.

Usage: moto_ssm.py URL KEY_ID SECRET commands
       moto_ssm.py URL KEY_ID SECRET parameter NAME
       moto_ssm.py URL KEY_ID SECRET put-parameter NAME VALUE [TYPE]

`commands` prints ListCommands' Commands (parameters included) as JSON;
`parameter` prints the value (nothing when missing); `put-parameter` stores a
parameter of TYPE (default String; SecureString is encrypted with moto's default
aws/ssm key, and read back as ciphertext without WithDecryption).
"""
import json
import sys

import boto3

url, key_id, secret, what = sys.argv[1:5]
ssm = boto3.client("ssm", endpoint_url=url, region_name="us-east-1",
                   aws_access_key_id=key_id, aws_secret_access_key=secret)
if what == "commands":
    print(json.dumps(ssm.list_commands()["Commands"], default=str))
elif what == "parameter":
    try:
        print(ssm.get_parameter(Name=sys.argv[5])["Parameter"]["Value"])
    except ssm.exceptions.ParameterNotFound:
        pass
elif what == "put-parameter":
    kind = sys.argv[7] if len(sys.argv) > 7 else "String"
    ssm.put_parameter(Name=sys.argv[5], Value=sys.argv[6], Type=kind)
else:
    sys.exit("unknown mode " + what)
