"""The SigV4 presigner: AWS's published example, and agreement with botocore."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config

from media_api.storage.sigv4 import presign_get


def test_matches_the_aws_documentation_example() -> None:
    # "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)", S3 API docs.
    url = presign_get(
        endpoint="https://examplebucket.s3.amazonaws.com",
        path="/test.txt",
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region="us-east-1",
        expires_seconds=86400,
        now=dt.datetime(2013, 5, 24, tzinfo=dt.UTC),
    )
    assert url.endswith(
        "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )


def test_agrees_with_botocore_for_path_style_urls_with_overrides() -> None:
    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:8333",
        region_name="us-east-1",
        aws_access_key_id="access",
        aws_secret_access_key="secret",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    key = "variants/6f1c/9a2b/thumb my photo+1.webp"
    params = {
        "response-content-type": "image/webp",
        "response-content-disposition": 'inline; filename="a b.webp"',
    }
    theirs = client.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": "media",
            "Key": key,
            "ResponseContentType": params["response-content-type"],
            "ResponseContentDisposition": params["response-content-disposition"],
        },
        ExpiresIn=900,
    )
    their_query = parse_qs(urlsplit(theirs).query)
    signed_at = dt.datetime.strptime(their_query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=dt.UTC
    )
    ours = presign_get(
        endpoint="http://127.0.0.1:8333",
        path=f"/media/{key}",
        access_key="access",
        secret_key="secret",
        region="us-east-1",
        expires_seconds=900,
        now=signed_at,
        params=params,
    )
    assert urlsplit(ours).path == urlsplit(theirs).path
    assert parse_qs(urlsplit(ours).query) == their_query
