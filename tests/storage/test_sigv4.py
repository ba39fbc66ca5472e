"""The SigV4 presigner: AWS's published example, and agreement with botocore."""

from __future__ import annotations

import datetime as dt
import functools
from urllib.parse import parse_qs, quote, urlsplit

import boto3
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from media_api.storage.sigv4 import presign


def test_matches_the_aws_documentation_example() -> None:
    # "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)", S3 API docs.
    url = presign(
        method="GET",
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
    ours = presign(
        method="GET",
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


def test_agrees_with_botocore_when_signing_content_length_and_part_params() -> None:
    """An UploadPart URL: content-length beside host in the signed headers, and the part's
    number and upload id in the signed query, as botocore's query signer computes them."""
    key = "quarantine/6f1c/9a2b upload+1"
    params = {"partNumber": "3", "uploadId": "Zm9v/YmFy+YmF6=="}
    request = AWSRequest(
        method="PUT",
        url=f"http://127.0.0.1:8333/media/{quote(key)}",
        params=params,
        headers={"Content-Length": "5242880"},
    )
    S3SigV4QueryAuth(Credentials("access", "secret"), "s3", "us-east-1", expires=900).add_auth(
        request
    )
    theirs = str(request.url)
    their_query = parse_qs(urlsplit(theirs).query)
    assert their_query["X-Amz-SignedHeaders"] == ["content-length;host"]
    signed_at = dt.datetime.strptime(their_query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=dt.UTC
    )
    ours = presign(
        method="PUT",
        endpoint="http://127.0.0.1:8333",
        path=f"/media/{key}",
        access_key="access",
        secret_key="secret",
        region="us-east-1",
        expires_seconds=900,
        now=signed_at,
        headers={"Content-Length": "5242880"},
        params=params,
    )
    assert urlsplit(ours).path == urlsplit(theirs).path
    assert parse_qs(urlsplit(ours).query) == their_query


def test_a_get_signs_host_only_and_a_signed_length_changes_the_signature() -> None:
    at = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    sign = functools.partial(
        presign,
        endpoint="http://127.0.0.1:8333",
        path="/media/k",
        access_key="access",
        secret_key="secret",
        region="us-east-1",
        expires_seconds=60,
        now=at,
    )
    get = sign(method="GET")
    assert "X-Amz-SignedHeaders=host&" in get
    # A signed content-length is part of the signature: another size, another signature.
    put_5 = sign(method="PUT", headers={"content-length": "5"})
    put_6 = sign(method="PUT", headers={"content-length": "6"})
    assert "X-Amz-SignedHeaders=content-length%3Bhost&" in put_5
    assert put_5.split("X-Amz-Signature=")[1] != put_6.split("X-Amz-Signature=")[1]
