"""Seeds moto with the kube2iam tutorial's world, then turns IAM enforcement on.

- IAM user `node`: the node's own identity, allowed only sts:AssumeRole.
- Role `s3-reader`: trusted by the node user, allowed s3:ListBucket on
  `team-bucket` only.
- Buckets `team-bucket` (with one object) and `other-bucket`.

Prints `AWS_ACCESS_KEY_ID=...` and `AWS_SECRET_ACCESS_KEY=...` lines for the
node's credentials. Usage: python seed_moto.py http://HOST:PORT
"""

import json
import sys
import urllib.request

import boto3

ACCOUNT = "123456789012"


def main(endpoint: str) -> None:
    session = boto3.session.Session(
        aws_access_key_id="seed", aws_secret_access_key="seed", region_name="us-east-1"
    )
    iam = session.client("iam", endpoint_url=endpoint)
    s3 = session.client("s3", endpoint_url=endpoint)

    iam.create_user(UserName="node")
    iam.put_user_policy(
        UserName="node",
        PolicyName="assume-pod-roles",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}
        ),
    )
    key = iam.create_access_key(UserName="node")["AccessKey"]

    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/node"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam.create_role(RoleName="s3-reader", AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName="s3-reader",
        PolicyName="list-team-bucket",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::team-bucket"}],
            }
        ),
    )
    for bucket in ("team-bucket", "other-bucket"):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket="team-bucket", Key="hello.txt", Body=b"hello from team-bucket\n")

    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"}, method="POST"
    )
    urllib.request.urlopen(request).read()

    print(f"AWS_ACCESS_KEY_ID={key['AccessKeyId']}")
    print(f"AWS_SECRET_ACCESS_KEY={key['SecretAccessKey']}")


if __name__ == "__main__":
    main(sys.argv[1])
