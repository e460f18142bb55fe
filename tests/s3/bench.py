"""The S3 API beside the native API, same run, same client library: 4 KiB and large PUT/GET
through boto3 (S3) and through urllib3 (the native `PUT/GET /v1/files/...`, the library
botocore itself sends with), against one local system with 3 replicas at N=1 (the API's own
cost, not replication's). Both sides send the body's sha256 (boto3 signs it; the native
client sends x-deposito-sha256), so both do the same hashing. Rounds are interleaved and the
medians quoted; the last column is S3 / native.

Usage: bench.py [--quick] (run by tests/s3/bench, which installs the clients)
Environment: DEPOSITO_BIN, the folder of deposito-operator; S3_BENCH_ROUNDS (default 3).
"""

import concurrent.futures
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import boto3
import urllib3
from botocore.config import Config

QUICK = "--quick" in sys.argv
SMALL_OPS = 400 if QUICK else 2000
SMALL = 4096
LARGE = (64 << 20) if QUICK else (1 << 30)
ROUNDS = int(os.environ.get("S3_BENCH_ROUNDS", "3"))
IN_FLIGHT = 16


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(root):
    data = os.path.join(root, "data")
    gw, s3 = free_port(), free_port()
    log = open(os.path.join(root, "operator.log"), "w")
    proc = subprocess.Popen(
        [os.path.join(os.environ["DEPOSITO_BIN"], "deposito-operator"), "local", "--replicas", "3",
         "--data-dir", data, "--listen", f"127.0.0.1:{gw}", "--s3-listen", f"127.0.0.1:{s3}",
         "--replica-port", str(free_port())],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": root})
    http = urllib3.PoolManager(maxsize=IN_FLIGHT)
    deadline = time.time() + 60
    while True:
        try:
            token = open(os.path.join(data, "token")).read().strip()
            r = http.request("GET", f"http://127.0.0.1:{gw}/v1/replicas",
                             headers={"Authorization": f"Bearer {token}"}, timeout=2)
            if r.status == 200 and r.data.count(b'"Live"') == 3:
                break
        except (OSError, urllib3.exceptions.HTTPError):
            pass
        if time.time() > deadline:
            raise SystemExit("the local system did not start: " + open(log.name).read()[-2000:])
        time.sleep(0.2)
    creds = open(os.path.join(data, "s3-credentials")).read()
    key = [line.split(" = ")[1] for line in creds.splitlines() if line.startswith("aws_access_key_id")][0]
    return proc, f"http://127.0.0.1:{gw}", f"http://127.0.0.1:{s3}", token, key


def main():
    root = tempfile.mkdtemp(prefix="deposito-s3-bench-")
    proc, gateway, endpoint, token, key = start(root)
    try:
        run(root, gateway, endpoint, token, key)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def run(root, gateway, endpoint, token, key):
    http = urllib3.PoolManager(maxsize=IN_FLIGHT)
    auth = {"Authorization": f"Bearer {token}"}
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
                      aws_secret_access_key=token,
                      config=Config(s3={"addressing_style": "path"}, max_pool_connections=IN_FLIGHT,
                                    request_checksum_calculation="when_required",
                                    response_checksum_validation="when_required"))
    s3.create_bucket(Bucket="s3bench")
    small = os.urandom(SMALL)
    small_sha = hashlib.sha256(small).hexdigest()
    large_path = os.path.join(root, "large.bin")
    with open(large_path, "wb") as f:
        for _ in range(LARGE >> 20):
            f.write(os.urandom(1 << 20))
    h = hashlib.sha256()
    with open(large_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    large_sha = h.hexdigest()

    def length(body):
        return {"Content-Length": str(len(body) if isinstance(body, bytes) else LARGE)}

    def native_put(name, body, sha):
        r = http.request("PUT", f"{gateway}/v1/files/nbench/{name}?replicas=1", body=body,
                         headers={**auth, **length(body), "x-deposito-sha256": sha}, preload_content=True)
        assert r.status == 201, (r.status, r.data[:200])

    def native_get(name):
        r = http.request("GET", f"{gateway}/v1/files/nbench/{name}", headers=auth, preload_content=False)
        n = sum(len(c) for c in r.stream(1 << 20))
        r.release_conn()
        assert r.status == 200, r.status
        return n

    def s3_put(name, body, _sha):
        # boto3 signs the body's sha256 (the replicas then check it), like x-deposito-sha256.
        s3.put_object(Bucket="s3bench", Key=name, Body=body)

    def s3_get(name):
        body = s3.get_object(Bucket="s3bench", Key=name)["Body"]
        n = sum(len(c) for c in iter(lambda: body.read(1 << 20), b""))
        return n

    # Presigned URLs, made before the clock starts: the same client library and work as the
    # native side, so the difference is the server's (signature check, S3 parsing).
    presigned = {}

    def presign(names):
        for name in names:
            presigned[("put", name)] = s3.generate_presigned_url(
                "put_object", Params={"Bucket": "s3bench", "Key": "p" + name}, ExpiresIn=3600)
            presigned[("get", name)] = s3.generate_presigned_url(
                "get_object", Params={"Bucket": "s3bench", "Key": "p" + name}, ExpiresIn=3600)

    def presigned_put(name, body, _sha):
        r = http.request("PUT", presigned[("put", name)], body=body, headers=length(body))
        assert r.status == 200, (r.status, r.data[:300])

    def presigned_get(name):
        r = http.request("GET", presigned[("get", name)], preload_content=False)
        n = sum(len(c) for c in r.stream(1 << 20))
        r.release_conn()
        assert r.status == 200, r.status
        return n

    def timed_small(put, get, round_no):
        names = [f"s{round_no}-{i}" for i in range(SMALL_OPS)]
        with concurrent.futures.ThreadPoolExecutor(IN_FLIGHT) as pool:
            t0 = time.perf_counter()
            list(pool.map(lambda n: put(n, small, small_sha), names))
            put_rate = SMALL_OPS / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            sizes = list(pool.map(get, names))
            get_rate = SMALL_OPS / (time.perf_counter() - t0)
        assert all(s == SMALL for s in sizes)
        return put_rate, get_rate

    def timed_large(put, get, round_no):
        name = f"large-{round_no}"
        with open(large_path, "rb") as f:
            t0 = time.perf_counter()
            put(name, f, large_sha)
            put_mbs = LARGE / (time.perf_counter() - t0) / 1e6
        t0 = time.perf_counter()
        assert get(name) == LARGE
        get_mbs = LARGE / (time.perf_counter() - t0) / 1e6
        return put_mbs, get_mbs

    sides = {"native": (native_put, native_get), "boto3": (s3_put, s3_get),
             "presigned": (presigned_put, presigned_get)}
    results = {(side, kind): [] for side in sides for kind in ("small", "large")}
    for r in range(ROUNDS):
        presign([f"s{r}-{i}" for i in range(SMALL_OPS)] + [f"large-{r}"])
        for side, (put, get) in sides.items():
            results[(side, "small")].append(timed_small(put, get, r))
            results[(side, "large")].append(timed_large(put, get, r))
        # The large copies go, so that the disk holds one set at a time.
        http.request("DELETE", f"{gateway}/v1/files/nbench/large-{r}", headers=auth)
        for key in (f"large-{r}", f"plarge-{r}"):
            s3.delete_object(Bucket="s3bench", Key=key)

    def med(side, kind, i):
        return statistics.median(x[i] for x in results[(side, kind)])

    size = f"{LARGE >> 20} MiB" if LARGE < (1 << 30) else "1 GiB"
    print(f"S3 beside the native API: local mode, 3 replicas, N=1, medians of {ROUNDS} interleaved rounds; "
          f"4 KiB: {SMALL_OPS} objects, {IN_FLIGHT} in flight; {size}: one object at a time")
    print()
    print("| figure | native API (urllib3) | S3 presigned (urllib3) | ratio | S3 (boto3) | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    rows = [("4 KiB PUT (ops/s)", "small", 0), ("4 KiB GET (ops/s)", "small", 1),
            (f"{size} PUT (MB/s)", "large", 0), (f"{size} GET (MB/s)", "large", 1)]
    for label, kind, i in rows:
        native = med("native", kind, i)
        pre, b3 = med("presigned", kind, i), med("boto3", kind, i)
        print(f"| {label} | {native:.0f} | {pre:.0f} | {pre / native:.2f} | {b3:.0f} | {b3 / native:.2f} |")
    print()
    print("ratio: S3 / native. The presigned column uses the native side's client library, so its "
          "ratio is the server's; boto3's adds its own per-request cost (signing, XML) on the same 2 cores.")


if __name__ == "__main__":
    main()
