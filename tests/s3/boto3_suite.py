"""Deposito's S3 API driven by boto3: every operation the gateway implements, with the
status codes and S3 error codes a client sees. Run by tests/e2e/tests/s3.rs against a real
system; each check raises on the first difference.

Usage: boto3_suite.py main|lower. `main` runs everything and leaves bucket `levels` holding
`three.bin` at 3 copies (the Rust test then counts them on disk); `lower` lowers it to 1 copy
with a self-copy, as S3 users change a storage class.

Environment: S3_MODE (`kube` against kube mode, else local), S3_ENDPOINT, S3_KEY, S3_SECRET
(full access), S3_RO_KEY, S3_RO_SECRET (read-only in bucket `suite`), THREE_FILE (the content
of `three.bin`), S3_DOMAIN (the server's --s3-domain).
"""

import hashlib
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["S3_ENDPOINT"]
# `kube` against kube mode (tests/e2e/tests/kube_s3_suites.rs), where buckets are namespaces.
KUBE = os.environ.get("S3_MODE") == "kube"
HELLO = b"hello, deposito\n"


def client(key=os.environ.get("S3_KEY"), secret=os.environ.get("S3_SECRET"), unsigned=False,
           checksums="when_required"):
    config = Config(
        signature_version=UNSIGNED if unsigned else "s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1},
        # boto3 >= 1.36 adds a CRC to every upload by default; the suite asks for one only
        # where it says so, and checks that default once (`checksums="when_supported"`).
        request_checksum_calculation=checksums,
        response_checksum_validation="when_required",
    )
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=key or "none",
        aws_secret_access_key=secret or "none",
        config=config,
    )


S3 = client()


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def expect_error(code, status, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        got = (e.response["Error"].get("Code"), e.response["ResponseMetadata"]["HTTPStatusCode"])
        check(got == (code, status), f"{fn.__name__}: expected {code} {status}, got {got}")
        return
    raise AssertionError(f"{fn.__name__}: expected {code} {status}, got success")


def md5(data):
    return hashlib.md5(data).hexdigest()


def head_meta(bucket, key):
    return S3.head_object(Bucket=bucket, Key=key)["Metadata"]


def wait_ready(bucket, key, n, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        meta = head_meta(bucket, key)
        if meta.get("replicas") == str(n) and meta.get("ready-replicas") == str(n):
            return
        time.sleep(0.5)
    raise AssertionError(f"{bucket}/{key}: not {n} ready copies: {head_meta(bucket, key)}")


def buckets():
    S3.create_bucket(Bucket="suite")
    expect_error("BucketAlreadyOwnedByYou", 409, S3.create_bucket, Bucket="suite")
    expect_error("InvalidBucketName", 400, S3.create_bucket, Bucket="my.bucket")
    if KUBE:
        # Buckets are namespaces: CreateBucket names the namespace to create, never makes it.
        expect_error("InvalidRequest", 400, S3.create_bucket, Bucket="no-such-namespace")
    else:
        expect_error("InvalidBucketName", 400, S3.create_bucket, Bucket="deposito-uploads")
    S3.head_bucket(Bucket="suite")
    expect_error("404", 404, S3.head_bucket, Bucket="absent")
    check(S3.get_bucket_location(Bucket="suite").get("LocationConstraint") in (None, ""), "location")
    names = [b["Name"] for b in S3.list_buckets()["Buckets"]]
    check("suite" in names and "deposito-uploads" not in names, f"list_buckets: {names}")
    expect_error("NoSuchBucket", 404, S3.put_object, Bucket="absent", Key="k", Body=b"x")
    # A refused upload's body is read and dropped, so the client gets the error, not a reset.
    expect_error("NoSuchBucket", 404, S3.put_object, Bucket="absent", Key="k", Body=os.urandom(5 << 20))


def objects():
    body = b"hello, deposito\n"
    put = S3.put_object(Bucket="suite", Key="hello.txt", Body=body, ContentType="text/plain",
                        Metadata={"owner": "ann"})
    check(put["ETag"] == f'"{md5(body)}"', f"put ETag {put['ETag']}")
    got = S3.get_object(Bucket="suite", Key="hello.txt")
    check(got["Body"].read() == body, "get bytes")
    check(got["ContentType"] == "text/plain", f"content type {got['ContentType']}")
    check(got["Metadata"]["owner"] == "ann", f"metadata {got['Metadata']}")
    check(got["ETag"] == put["ETag"] and got["ContentLength"] == len(body), "get headers")
    head = S3.head_object(Bucket="suite", Key="hello.txt")
    check(head["ContentLength"] == len(body) and head["Metadata"]["replicas"] == "1", f"head {head}")
    expect_error("NoSuchKey", 404, S3.get_object, Bucket="suite", Key="absent")
    expect_error("404", 404, S3.head_object, Bucket="suite", Key="absent")
    for bad in ["a/b", "report\u202efdp.exe", "zero\u200bwidth", ".DEPOSITO-x"]:
        expect_error("InvalidObjectName", 400, S3.put_object, Bucket="suite", Key=bad, Body=b"x")
    # Checksums the client sends (header or aws-chunked trailer) are checked as the bytes pass.
    expect_error("BadDigest", 400, S3.put_object, Bucket="suite", Key="crc.bin", Body=b"hello",
                 ChecksumCRC32="AAAAAA==")
    expect_error("BadDigest", 400, S3.put_object, Bucket="suite", Key="crc.bin", Body=b"hello",
                 ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")
    expect_error("404", 404, S3.head_object, Bucket="suite", Key="crc.bin")
    # (CRC32C and CRC64NVME need botocore[crt]; the server computes all five alike.)
    for algorithm in ["CRC32", "SHA1", "SHA256"]:
        S3.put_object(Bucket="suite", Key="crc.bin", Body=os.urandom(70000), ChecksumAlgorithm=algorithm)
    client(checksums="when_supported").put_object(Bucket="suite", Key="crc.bin", Body=b"default checksums")
    check(S3.get_object(Bucket="suite", Key="crc.bin")["Body"].read() == b"default checksums", "default checksums")
    # An empty object.
    S3.put_object(Bucket="suite", Key="empty", Body=b"")
    check(S3.get_object(Bucket="suite", Key="empty")["Body"].read() == b"", "empty object")


def ranges():
    data = os.urandom((1 << 20) + 3)
    S3.put_object(Bucket="suite", Key="ranged.bin", Body=data)
    n = len(data)
    for header, lo, hi in [("bytes=0-0", 0, 0), ("bytes=5-99", 5, 99), (f"bytes={n - 6}-", n - 6, n - 1),
                           ("bytes=-10", n - 10, n - 1), ("bytes=1000-", 1000, n - 1),
                           (f"bytes=10-{n + 50}", 10, n - 1)]:
        got = S3.get_object(Bucket="suite", Key="ranged.bin", Range=header)
        check(got["ResponseMetadata"]["HTTPStatusCode"] == 206, f"{header}: status")
        check(got["Body"].read() == data[lo:hi + 1], f"{header}: bytes")
        check(got["ContentRange"] == f"bytes {lo}-{hi}/{n}", f"{header}: {got['ContentRange']}")
    expect_error("InvalidRange", 416, S3.get_object, Bucket="suite", Key="ranged.bin",
                 Range=f"bytes={n + 10}-")


def conditionals():
    etag = S3.head_object(Bucket="suite", Key="hello.txt")["ETag"]
    future = datetime.now(timezone.utc) + timedelta(days=1)
    past = datetime(2000, 1, 1, tzinfo=timezone.utc)
    expect_error("304", 304, S3.get_object, Bucket="suite", Key="hello.txt", IfNoneMatch=etag)
    expect_error("304", 304, S3.get_object, Bucket="suite", Key="hello.txt", IfModifiedSince=future)
    expect_error("PreconditionFailed", 412, S3.get_object, Bucket="suite", Key="hello.txt",
                 IfMatch='"0123"')
    expect_error("PreconditionFailed", 412, S3.get_object, Bucket="suite", Key="hello.txt",
                 IfUnmodifiedSince=past)
    S3.get_object(Bucket="suite", Key="hello.txt", IfMatch=etag)["Body"].read()
    S3.get_object(Bucket="suite", Key="hello.txt", IfNoneMatch='"0123"', IfModifiedSince=past)


def levels():
    S3.create_bucket(Bucket="levels")
    with open(os.environ["THREE_FILE"], "rb") as f:
        three = f.read()
    S3.put_object(Bucket="levels", Key="three.bin", Body=three, Metadata={"replicas": "3"})
    check(head_meta("levels", "three.bin")["replicas"] == "3", "level 3 from metadata")
    S3.put_object(Bucket="levels", Key="rr.bin", Body=b"rr", StorageClass="REDUCED_REDUNDANCY")
    check(head_meta("levels", "rr.bin")["replicas"] == "1", "REDUCED_REDUNDANCY is 1 copy")
    expect_error("InvalidArgument", 400, S3.put_object, Bucket="levels", Key="bad", Body=b"x",
                 Metadata={"replicas": "0"})
    expect_error("InvalidArgument", 400, S3.put_object, Bucket="levels", Key="bad", Body=b"x",
                 Metadata={"replicas": "many"})
    expect_error("InvalidStorageClass", 400, S3.put_object, Bucket="levels", Key="bad", Body=b"x",
                 StorageClass="GLACIER")
    # The bucket's default level: its replicas tag.
    S3.create_bucket(Bucket="tagged")
    S3.put_bucket_tagging(Bucket="tagged", Tagging={"TagSet": [{"Key": "replicas", "Value": "2"}]})
    tags = S3.get_bucket_tagging(Bucket="tagged")["TagSet"]
    check(tags == [{"Key": "replicas", "Value": "2"}], f"tags {tags}")
    expect_error("InvalidArgument", 400, S3.put_bucket_tagging, Bucket="tagged",
                 Tagging={"TagSet": [{"Key": "replicas", "Value": "zero"}]})
    S3.put_object(Bucket="tagged", Key="two.bin", Body=b"two")
    check(head_meta("tagged", "two.bin")["replicas"] == "2", "level from the bucket tag")
    wait_ready("tagged", "two.bin", 2)
    wait_ready("levels", "three.bin", 3)


def listing():
    for i in range(30):
        S3.put_object(Bucket="suite", Key=f"list-{i:02}", Body=str(i).encode())
    S3.put_object(Bucket="suite", Key="other-x", Body=b"o")
    keys, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = S3.list_objects_v2(Bucket="suite", Prefix="list-", MaxKeys=7, **kw)
        keys += [o["Key"] for o in page.get("Contents", [])]
        check(page["KeyCount"] == len(page.get("Contents", [])), "KeyCount")
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    check(keys == [f"list-{i:02}" for i in range(30)], f"v2 pages: {keys}")
    page = S3.list_objects_v2(Bucket="suite", Delimiter="-")
    prefixes = [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    plain = [o["Key"] for o in page.get("Contents", [])]
    check(prefixes == ["list-", "other-"], f"common prefixes {prefixes}")
    check("hello.txt" in plain and not any(k.startswith("list-") for k in plain), f"keys {plain}")
    after = S3.list_objects_v2(Bucket="suite", Prefix="list-", StartAfter="list-25")
    check([o["Key"] for o in after["Contents"]] == [f"list-{i}" for i in range(26, 30)], "StartAfter")
    obj = S3.list_objects_v2(Bucket="suite", Prefix="hello.txt")["Contents"][0]
    check(obj["Size"] == 16 and obj["ETag"] == f'"{md5(HELLO)}"', f"object {obj}")
    keys, marker = [], ""
    while True:
        page = S3.list_objects(Bucket="suite", Prefix="list-", MaxKeys=11, Marker=marker)
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        marker = page.get("NextMarker") or keys[-1]
    check(keys == [f"list-{i:02}" for i in range(30)], f"v1 pages: {keys}")
    paginator = S3.get_paginator("list_objects_v2")
    total = sum(len(p.get("Contents", [])) for p in paginator.paginate(Bucket="suite", PaginationConfig={"PageSize": 4}))
    check(total >= 31, f"paginator saw {total}")


def copies_and_deletes():
    S3.copy_object(Bucket="suite", Key="hello-copy.txt", CopySource={"Bucket": "suite", "Key": "hello.txt"})
    got = S3.get_object(Bucket="suite", Key="hello-copy.txt")
    check(got["Body"].read() == b"hello, deposito\n" and got["Metadata"]["owner"] == "ann", "copy")
    S3.create_bucket(Bucket="suite2")
    S3.copy_object(Bucket="suite2", Key="moved.txt", CopySource={"Bucket": "suite", "Key": "hello.txt"},
                   MetadataDirective="REPLACE", Metadata={"owner": "bob"}, ContentType="text/x-note")
    got = S3.get_object(Bucket="suite2", Key="moved.txt")
    check(got["Metadata"]["owner"] == "bob" and got["ContentType"] == "text/x-note", "copy REPLACE")
    expect_error("NoSuchKey", 404, S3.copy_object, Bucket="suite2", Key="x",
                 CopySource={"Bucket": "suite", "Key": "absent"})
    S3.delete_object(Bucket="suite", Key="hello-copy.txt")
    expect_error("NoSuchKey", 404, S3.get_object, Bucket="suite", Key="hello-copy.txt")
    S3.delete_object(Bucket="suite", Key="never-there")
    out = S3.delete_objects(Bucket="suite", Delete={"Objects": [
        {"Key": "list-00"}, {"Key": "list-01"}, {"Key": "absent"}, {"Key": "bad/name"}]})
    deleted = sorted(d["Key"] for d in out.get("Deleted", []))
    errors = [(e["Key"], e["Code"]) for e in out.get("Errors", [])]
    check(deleted == ["absent", "list-00", "list-01"], f"deleted {deleted}")
    check(errors == [("bad/name", "InvalidObjectName")], f"errors {errors}")
    expect_error("BucketNotEmpty", 409, S3.delete_bucket, Bucket="suite2")
    S3.delete_object(Bucket="suite2", Key="moved.txt")
    # The copies may still be being removed: the bucket goes at once all the same.
    S3.delete_bucket(Bucket="suite2")
    expect_error("NoSuchBucket", 404, S3.delete_bucket, Bucket="suite2")


def multipart():
    parts = [os.urandom(5 << 20), os.urandom(5 << 20), os.urandom(1 << 20)]
    up = S3.create_multipart_upload(Bucket="suite", Key="mp.bin", Metadata={"replicas": "2", "kind": "mp"},
                                    ContentType="application/x-test")
    uid = up["UploadId"]
    etags = []
    for i, data in enumerate(parts, start=1):
        out = S3.upload_part(Bucket="suite", Key="mp.bin", UploadId=uid, PartNumber=i, Body=data)
        check(out["ETag"] == f'"{md5(data)}"', f"part {i} ETag")
        etags.append(out["ETag"])
    listed = S3.list_parts(Bucket="suite", Key="mp.bin", UploadId=uid)["Parts"]
    check([(p["PartNumber"], p["Size"], p["ETag"]) for p in listed]
          == [(i + 1, len(d), etags[i]) for i, d in enumerate(parts)], f"list_parts {listed}")
    uploads = S3.list_multipart_uploads(Bucket="suite").get("Uploads", [])
    check([(u["Key"], u["UploadId"]) for u in uploads] == [("mp.bin", uid)], f"uploads {uploads}")
    expect_error("InvalidPart", 400, S3.complete_multipart_upload, Bucket="suite", Key="mp.bin", UploadId=uid,
                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00"'}]})
    expect_error("InvalidPartOrder", 400, S3.complete_multipart_upload, Bucket="suite", Key="mp.bin",
                 UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": etags[1]},
                                                          {"PartNumber": 1, "ETag": etags[0]}]})
    done = S3.complete_multipart_upload(Bucket="suite", Key="mp.bin", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    expected = hashlib.md5(b"".join(bytes.fromhex(md5(d)) for d in parts)).hexdigest() + "-3"
    check(done["ETag"] == f'"{expected}"', f"multipart ETag {done['ETag']} != {expected}")
    got = S3.get_object(Bucket="suite", Key="mp.bin")
    check(got["Body"].read() == b"".join(parts), "multipart bytes")
    check(got["ETag"] == done["ETag"] and got["ContentType"] == "application/x-test", "multipart headers")
    check(got["Metadata"]["kind"] == "mp" and got["Metadata"]["replicas"] == "2", f"meta {got['Metadata']}")
    check(S3.list_multipart_uploads(Bucket="suite").get("Uploads", []) == [], "upload forgotten")
    expect_error("NoSuchUpload", 404, S3.upload_part, Bucket="suite", Key="mp.bin", UploadId=uid,
                 PartNumber=1, Body=b"late")
    # Parts copied from other objects: a range, then a whole object.
    ranged = S3.get_object(Bucket="suite", Key="ranged.bin")["Body"].read()
    uid = S3.create_multipart_upload(Bucket="suite", Key="mpc.bin")["UploadId"]
    p1 = S3.upload_part_copy(Bucket="suite", Key="mpc.bin", UploadId=uid, PartNumber=1,
                             CopySource={"Bucket": "suite", "Key": "ranged.bin"}, CopySourceRange="bytes=100-99999")
    p2 = S3.upload_part_copy(Bucket="suite", Key="mpc.bin", UploadId=uid, PartNumber=2,
                             CopySource={"Bucket": "suite", "Key": "hello.txt"})
    check(p1["CopyPartResult"]["ETag"] == f'"{md5(ranged[100:100000])}"', "copied part ETag")
    expect_error("InvalidRange", 416, S3.upload_part_copy, Bucket="suite", Key="mpc.bin", UploadId=uid,
                 PartNumber=3, CopySource={"Bucket": "suite", "Key": "hello.txt"}, CopySourceRange="bytes=10-99")
    S3.complete_multipart_upload(Bucket="suite", Key="mpc.bin", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]},
        {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]}]})
    got = S3.get_object(Bucket="suite", Key="mpc.bin")["Body"].read()
    check(got == ranged[100:100000] + HELLO, "parts copied from a range and an object")
    # Abort.
    uid = S3.create_multipart_upload(Bucket="suite", Key="aborted.bin")["UploadId"]
    S3.upload_part(Bucket="suite", Key="aborted.bin", UploadId=uid, PartNumber=1, Body=b"a" * 1000)
    S3.abort_multipart_upload(Bucket="suite", Key="aborted.bin", UploadId=uid)
    check(S3.list_multipart_uploads(Bucket="suite").get("Uploads", []) == [], "aborted upload forgotten")
    expect_error("NoSuchUpload", 404, S3.list_parts, Bucket="suite", Key="aborted.bin", UploadId=uid)
    expect_error("404", 404, S3.head_object, Bucket="suite", Key="aborted.bin")


def access():
    ro = client(os.environ["S3_RO_KEY"], os.environ["S3_RO_SECRET"])
    check(ro.get_object(Bucket="suite", Key="hello.txt")["Body"].read() == b"hello, deposito\n", "ro read")
    expect_error("AccessDenied", 403, ro.put_object, Bucket="suite", Key="ro.txt", Body=b"x")
    expect_error("AccessDenied", 403, ro.delete_object, Bucket="suite", Key="hello.txt")
    expect_error("AccessDenied", 403, ro.get_object, Bucket="levels", Key="three.bin")
    check([b["Name"] for b in ro.list_buckets()["Buckets"]] == ["suite"], "ro sees its bucket only")
    anon = client(unsigned=True)
    expect_error("AccessDenied", 403, anon.get_object, Bucket="suite", Key="hello.txt")
    expect_error("AccessDenied", 403, anon.list_buckets)
    wrong = client(os.environ["S3_KEY"], "wrong-secret-" + "x" * 40)
    expect_error("SignatureDoesNotMatch", 403, wrong.get_object, Bucket="suite", Key="hello.txt")
    unknown = client("DEPAAAAAAAAAAAAAAAAA", "x" * 64)
    expect_error("InvalidAccessKeyId", 403, unknown.get_object, Bucket="suite", Key="hello.txt")


def presigned():
    url = S3.generate_presigned_url("get_object", Params={"Bucket": "suite", "Key": "hello.txt"}, ExpiresIn=60)
    with urllib.request.urlopen(url, timeout=10) as r:
        check(r.read() == b"hello, deposito\n", "presigned GET")
    # The same length, one hex digit changed: a well-formed signature that does not match.
    last = url[-1]
    tampered = url[:-1] + ("0" if last != "0" else "1")
    check("X-Amz-Signature=" in url.rsplit("&", 1)[-1], f"signature last in {url}")
    try:
        urllib.request.urlopen(tampered, timeout=10)
        raise AssertionError("tampered presigned URL accepted")
    except urllib.error.HTTPError as e:
        check(e.code == 403 and b"SignatureDoesNotMatch" in e.read(), f"tampered presigned URL: {e.code}")
    put_url = S3.generate_presigned_url("put_object", Params={"Bucket": "suite", "Key": "presigned.txt"},
                                        ExpiresIn=60)
    req = urllib.request.Request(put_url, data=b"via presigned PUT", method="PUT")
    with urllib.request.urlopen(req, timeout=10) as r:
        check(r.status == 200, "presigned PUT")
    check(S3.get_object(Bucket="suite", Key="presigned.txt")["Body"].read() == b"via presigned PUT", "presigned PUT bytes")


def virtual_hosted():
    """BUCKET.DOMAIN addressing (--s3-domain): the names resolve to the endpoint's address here."""
    domain = os.environ["S3_DOMAIN"]
    host, port = ENDPOINT.split("//")[1].rsplit(":", 1)
    resolve = socket.getaddrinfo

    def local_names(name, *args, **kwargs):
        if name == domain or name.endswith("." + domain):
            name = host
        return resolve(name, *args, **kwargs)

    socket.getaddrinfo = local_names
    try:
        vh = boto3.client("s3", endpoint_url=f"http://{domain}:{port}", region_name="us-east-1",
                          aws_access_key_id=os.environ["S3_KEY"], aws_secret_access_key=os.environ["S3_SECRET"],
                          config=Config(s3={"addressing_style": "virtual"}, retries={"max_attempts": 1},
                                        request_checksum_calculation="when_required"))
        seen = []
        vh.meta.events.register("before-send", lambda request, **_: seen.append(request.url))
        vh.put_object(Bucket="suite", Key="virtual.txt", Body=b"virtual")
        check(vh.get_object(Bucket="suite", Key="virtual.txt")["Body"].read() == b"virtual", "virtual GET")
        keys = [o["Key"] for o in vh.list_objects_v2(Bucket="suite", Prefix="virtual")["Contents"]]
        check(keys == ["virtual.txt"], f"virtual list {keys}")
        check(all(url.startswith(f"http://suite.{domain}:{port}/") for url in seen), f"not virtual-hosted: {seen}")
    finally:
        socket.getaddrinfo = resolve
    # Path style by address still works beside it.
    check(S3.get_object(Bucket="suite", Key="virtual.txt")["Body"].read() == b"virtual", "path style GET")


def aging():
    # A bucket lifecycle of one whole-bucket rule with Expiration Days is the namespace's
    # default lifecycle; what Deposito cannot map is NotImplemented.
    expect_error("NoSuchLifecycleConfiguration", 404, S3.get_bucket_lifecycle_configuration, Bucket="suite")
    rule = {"ID": "expire", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 30}}
    S3.put_bucket_lifecycle_configuration(Bucket="suite", LifecycleConfiguration={"Rules": [rule]})
    got = S3.get_bucket_lifecycle_configuration(Bucket="suite")["Rules"]
    check(len(got) == 1 and got[0]["Expiration"]["Days"] == 30 and got[0]["Status"] == "Enabled",
          f"lifecycle: {got}")
    glacier = dict(rule, Transitions=[{"Days": 1, "StorageClass": "GLACIER"}])
    expect_error("NotImplemented", 501, S3.put_bucket_lifecycle_configuration, Bucket="suite",
                 LifecycleConfiguration={"Rules": [glacier]})
    prefixed = dict(rule, Filter={"Prefix": "logs-"})
    expect_error("NotImplemented", 501, S3.put_bucket_lifecycle_configuration, Bucket="suite",
                 LifecycleConfiguration={"Rules": [prefixed]})
    check(S3.get_bucket_lifecycle_configuration(Bucket="suite")["Rules"][0]["Expiration"]["Days"] == 30,
          "a refused configuration changed nothing")
    S3.delete_bucket_lifecycle(Bucket="suite")
    expect_error("NoSuchLifecycleConfiguration", 404, S3.get_bucket_lifecycle_configuration, Bucket="suite")

    # Object Lock retention (COMPLIANCE) is the file's retention lock, here for 90 s.
    until = (datetime.now(timezone.utc) + timedelta(seconds=90)).replace(microsecond=0)
    S3.put_object(Bucket="suite", Key="locked.txt", Body=b"kept")
    expect_error("NoSuchObjectLockConfiguration", 404, S3.get_object_retention, Bucket="suite", Key="locked.txt")
    S3.put_object_retention(Bucket="suite", Key="locked.txt",
                            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
    got = S3.get_object_retention(Bucket="suite", Key="locked.txt")["Retention"]
    check(got["Mode"] == "COMPLIANCE" and got["RetainUntilDate"] == until, f"retention: {got}")
    expect_error("AccessDenied", 403, S3.delete_object, Bucket="suite", Key="locked.txt")
    expect_error("AccessDenied", 403, S3.put_object, Bucket="suite", Key="locked.txt", Body=b"other")
    expect_error("InvalidRequest", 400, S3.put_object_retention, Bucket="suite", Key="locked.txt",
                 Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - timedelta(seconds=30)})
    expect_error("InvalidArgument", 400, S3.put_object_retention, Bucket="suite", Key="locked.txt",
                 Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until + timedelta(days=1)})
    check(S3.get_object(Bucket="suite", Key="locked.txt")["Body"].read() == b"kept", "the locked content")
    # The lock given with the upload itself.
    S3.put_object(Bucket="suite", Key="locked-at-put.txt", Body=b"kept too",
                  ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
    got = S3.get_object_retention(Bucket="suite", Key="locked-at-put.txt")["Retention"]
    check(got["RetainUntilDate"] == until, f"retention at put: {got}")
    expect_error("AccessDenied", 403, S3.delete_object, Bucket="suite", Key="locked-at-put.txt")


def lower():
    S3.copy_object(Bucket="levels", Key="three.bin", CopySource={"Bucket": "levels", "Key": "three.bin"},
                   MetadataDirective="REPLACE", Metadata={"replicas": "1"})
    check(head_meta("levels", "three.bin")["replicas"] == "1", "lowered to 1")
    expect_error("InvalidRequest", 400, S3.copy_object, Bucket="levels", Key="three.bin",
                 CopySource={"Bucket": "levels", "Key": "three.bin"})


if __name__ == "__main__":
    phase = sys.argv[1]
    steps = {"main": [buckets, objects, ranges, conditionals, levels, listing, copies_and_deletes, multipart,
                      access, presigned, virtual_hosted, aging],
             "lower": [lower]}[phase]
    for step in steps:
        step()
        print(f"boto3 {step.__name__}: ok", flush=True)
