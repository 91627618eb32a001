"""HTTPS, mutual TLS and AuthN tokens, end to end: clusters started by `scripts/ais-local
start --mtls` and `--https --auth`, real mounts, real reads.

One cluster per class (class scope, so only one runs at a time): TestTLS on a cluster that
serves HTTPS and requires client certificates on its public network, TestAuthN on one that
serves HTTPS and requires tokens. The daemons run with REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE
pointing at a bundle without the test CA, as on many machines: `requests` would let those
override the client's own CA (and even skip_verify) if the client did not pass it per request.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
import time
import urllib.request
from pathlib import Path

import certifi
import pytest
import requests

from aisbatchfs.ais import AisClient, BucketRef, ClientConfig
from tests.mounting import is_mounted, run
from tests.tlsauth import SecureCluster, claims, start_secure, stop_secure

pytestmark = pytest.mark.cluster

AISBATCHFS = [sys.executable, "-m", "aisbatchfs"]
BUCKET = "data"
SMALL = 120  # files under many/, so every timed read can take a file not read before
REDIRECTS = (301, 302, 307, 308)


def dataset() -> dict[str, bytes]:
    files = {f"many/f{i:03d}": os.urandom(1 + (i * 7919) % 30_000) for i in range(SMALL)}
    files["big.bin"] = os.urandom(3 * (1 << 20) + 5)  # read with ranged GETs, not batched
    files["dir/note.txt"] = b"through TLS\n"
    return files


def fill(cluster: SecureCluster, bucket: str, files: dict[str, bytes]) -> None:
    cluster.create_bucket(bucket)
    for name, blob in files.items():
        cluster.put(bucket, name, blob)


def daemon_env(**extra: str) -> dict[str, str]:
    """The daemon's environment: none of the SDK's variables (no AIS_AUTHN_TOKEN, no CA), and
    a system CA bundle in the variables `requests` reads, which must not win over client_ca."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIS_", "AISBATCHFS_"))}
    env.update(REQUESTS_CA_BUNDLE=certifi.where(), CURL_CA_BUNDLE=certifi.where(),
               NO_PROXY="127.0.0.1,localhost")
    env.update(extra)
    return env


def refused(source: str, mountpoint: Path, *args: str, env: dict | None = None) -> str:
    """Mount in the background (as users do) and expect exit 1; the message, checked to be
    a message and not a traceback."""
    mountpoint.mkdir(exist_ok=True)
    r = run([*AISBATCHFS, "mount", source, str(mountpoint), *args], check=False, timeout=60,
            env=env or daemon_env())
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 1, (r.returncode, err)
    assert "Traceback" not in err and "urllib3" not in err, err
    assert not is_mounted(mountpoint)
    return err


def file_mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def node_pids(cluster: SecureCluster) -> list[int]:
    return [n["pid"] for n in cluster.status()["nodes"]]


def recording_client(cluster: SecureCluster, token: str | None = None) -> tuple[AisClient, list]:
    """An in-process client that records every HTTP exchange, redirect hops included:
    (url, status, whether the request carried an Authorization header)."""
    client = AisClient(ClientConfig(endpoint=cluster.endpoint, verify=cluster.ca,
                                    cert=cluster.cert, token=token))
    hops: list[tuple[str, int, bool]] = []
    count = client.transport._count  # called once per HTTP exchange, redirect hops included

    def record(resp: requests.Response) -> None:
        hops.append((resp.request.url, resp.status_code, "Authorization" in resp.request.headers))
        count(resp)

    client.transport._count = record
    return client, hops


def read_through(client: AisClient, files: dict[str, bytes]) -> None:
    """A whole GET, a ranged GET and a GetBatch, each checked byte for byte."""
    b = BucketRef(BUCKET)
    assert client.get(b, "dir/note.txt") == files["dir/note.txt"]
    assert client.get(b, "big.bin", start=1000, length=5000) == files["big.bin"][1000:6000]
    names = [f"many/f{i:03d}" for i in range(3)]
    batch = client.batch(bucket=b)
    for n in names:
        batch.add(n)
    got = [data for _, data in batch.get()]
    assert got == [files[n] for n in names]


def check_redirect_hops(cluster: SecureCluster, hops: list) -> list[tuple]:
    """Every hop is HTTPS; the proxy redirected at least once, to a target's public port.
    Returns (redirect hop, next hop) pairs."""
    assert hops and all(url.startswith("https://127.0.0.1:") for url, _, _ in hops), hops
    proxy_port = cluster.endpoint.rsplit(":", 1)[1]
    target_ports = {str(n["port"]) for n in cluster.status()["nodes"] if n["role"] == "target"}
    pairs = [(hops[i], hops[i + 1]) for i in range(len(hops) - 1) if hops[i][1] in REDIRECTS]
    assert pairs, hops
    for (url, _, _), (next_url, _, _) in pairs:
        assert url.split("/")[2].endswith(f":{proxy_port}")
        assert next_url.split("/")[2].rsplit(":", 1)[1] in target_ports, (url, next_url)
    return pairs


# -- HTTPS and mutual TLS ------------------------------------------------------------------------


@pytest.fixture(scope="class")
def tls():
    # variables that would change the cluster if they reached its nodes: ais-local scrubs them
    env = dict(os.environ, AIS_AUTHN_SECRET_KEY="not-the-secret", AIS_CLUSTER_CIDR="10.9.0.0/16",
               AIS_AUTHN_PUBLIC_KEY="not-a-key")
    c = start_secure("mtls", "--mtls", env=env)
    try:
        c.files = dataset()
        fill(c, BUCKET, c.files)
        yield c
    finally:
        stop_secure(c)


class TestTLS:
    def test_ais_local_prints_and_records_the_tls_material(self, tls):
        assert list(tls.lines) == ["AIS_ENDPOINT", "AIS_CLIENT_CA", "AIS_CRT", "AIS_CRT_KEY"]
        assert tls.endpoint.startswith("https://127.0.0.1:")
        status = tls.status()
        assert status["ready"] and status["endpoint"] == tls.endpoint
        assert status["https"]["mtls"] and status["https"]["client_ca"] == tls.ca
        assert (status["https"]["client_crt"], status["https"]["client_key"]) == tls.cert
        assert status["auth"] is None
        node_crt = status["https"]["node_crt"]
        ext = run(["openssl", "x509", "-in", node_crt, "-noout", "-ext",
                   "subjectAltName,extendedKeyUsage"], timeout=30).stdout.decode()
        assert "IP Address:127.0.0.1" in ext and "DNS:localhost" in ext
        assert "TLS Web Server Authentication" in ext and "TLS Web Client Authentication" in ext
        for key in (tls.cert[1], node_crt.replace(".crt", ".key")):
            assert file_mode(key) == 0o600
        for pid in node_pids(tls):
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert not [v for v in env if v.startswith((b"AIS_AUTHN_", b"AIS_CLUSTER_CIDR"))]
        again = tls.run("start", "--mtls", timeout=120)
        assert again.returncode == 0 and again.stdout == tls.stdout, again.stderr
        other = tls.run("start", "--https", timeout=120)  # not the mode it runs in
        assert other.returncode == 1 and "stop it first" in other.stderr
        assert tls.status()["ready"]

    def test_only_the_public_network_asks_for_a_client_certificate(self, tls):
        proxy = tls.status()["nodes"][0]
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{tls.endpoint}/v1/health", verify=tls.ca, timeout=10)
        assert requests.get(f"{tls.endpoint}/v1/health", verify=tls.ca, cert=tls.cert,
                            timeout=10).status_code == 200
        layout = json.loads((Path(tls.status()["root"]) / "layout.json").read_text())
        control = layout["ports"][0][1]
        assert proxy["port"] == layout["ports"][0][0]
        # the intra-cluster control port completes a handshake without a client certificate
        r = requests.get(f"https://127.0.0.1:{control}/v1/health", verify=tls.ca, timeout=10)
        assert r.status_code < 500

    def test_mount_with_the_cluster_ca_reads_byte_exact(self, tls, mounter):
        m = mounter(tls.endpoint, "--bucket", BUCKET, *tls.tls_options(), env=daemon_env())
        for name, blob in tls.files.items():
            assert (m.path / name).read_bytes() == tls.get(BUCKET, name) == blob, name
        assert sorted(os.listdir(m.path / "many")) == sorted(
            n.split("/")[1] for n in tls.files if n.startswith("many/"))
        assert m.stats()["client"].get("calls_moss", 0) >= 1  # batched reads went through TLS too
        assert "skip_verify" not in m.log_text()

    def test_verification_without_the_ca_refuses_the_mount(self, tls, tmp_path):
        cert = tls.tls_options()[2:]  # the client certificate, but no CA
        err = refused(tls.endpoint, tmp_path / "mp", "--bucket", BUCKET, *cert)
        assert "certificate verify failed" in err and "unable to get local issuer" in err, err
        err = refused(tls.endpoint, tmp_path / "mp", *cert)  # the whole cluster: the same
        assert "certificate verify failed" in err, err

    def test_skip_verify_reads_and_warns_exactly_once(self, tls, mounter):
        cert = tls.tls_options()[2:]
        m = mounter(tls.endpoint, "--bucket", BUCKET, "-o", "skip_verify", *cert,
                    env=daemon_env())
        for name in ("dir/note.txt", "many/f007", "big.bin"):
            assert (m.path / name).read_bytes() == tls.files[name]
        log = m.log_text()
        assert log.count("TLS certificate verification is off (skip_verify)") == 1, log
        assert "InsecureRequestWarning" not in log and "Unverified HTTPS request" not in log

    def test_mutual_tls_is_refused_without_a_client_certificate(self, tls, tmp_path):
        ca = ["-o", f"client_ca={tls.ca}"]
        # the server's TLS alert, by name, whether the request had a body (a listing: the
        # server's close can reset the connection before the alert is read) or not (a HEAD)
        for args in (["--bucket", BUCKET], []):
            err = refused(tls.endpoint, tmp_path / "mp", *args, *ca)
            assert "TLS: tlsv13 alert certificate required" in err, err
        # another CA's certificate is no better than none
        other = tmp_path / "other"
        other.mkdir()
        for args in (["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", "k.pem"],
                     ["req", "-new", "-x509", "-key", "k.pem", "-subj", "/CN=stranger",
                      "-days", "2", "-out", "c.pem"]):
            run(["openssl", *args], cwd=other, timeout=30)
        err = refused(tls.endpoint, tmp_path / "mp", "--bucket", BUCKET, *ca,
                      "-o", f"client_cert={other / 'c.pem'}", "-o", f"client_key={other / 'k.pem'}")
        assert "TLS: tlsv1 alert unknown ca" in err, err

    def test_redirects_to_targets_stay_on_https(self, tls):
        client, hops = recording_client(tls)
        read_through(client, tls.files)
        check_redirect_hops(tls, hops)


# -- AuthN tokens --------------------------------------------------------------------------------


def write_token(path: Path, token: str) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(token + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)  # at once: the daemon never reads half a token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Reader:
    """Reads the small files of a mount one by one, each a file not read before (so each
    read asks the cluster), checking the bytes."""

    def __init__(self, mount, files: dict[str, bytes]) -> None:
        self.mount = mount
        self.files = files
        self.next = 0
        os.listdir(mount.path / "many")  # listed now: later lookups need no request

    def one(self) -> None:
        name = f"many/f{self.next:03d}"
        self.next += 1
        assert self.next <= SMALL, "ran out of unread files"
        assert (self.mount.path / name).read_bytes() == self.files[name], name


@pytest.fixture(scope="class")
def auth():
    c = start_secure("auth", "--https", "--auth")
    try:
        c.files = dataset()
        fill(c, BUCKET, c.files)
        c.create_bucket("other")
        yield c
    finally:
        stop_secure(c)


class TestAuthN:
    def mount(self, auth: SecureCluster, mounter, token_file: Path, *args: str, env=None):
        # --no-batch: one GET per file read, so each read shows what the token is worth now
        return mounter(auth.endpoint, "--bucket", BUCKET, "--no-batch", *auth.tls_options(),
                       "-o", f"token_file={token_file}", *args, env=env or daemon_env())

    def test_ais_local_keeps_the_secret_private_and_mints_tokens(self, auth):
        assert list(auth.lines) == ["AIS_ENDPOINT", "AIS_CLIENT_CA", "AIS_AUTHN_TOKEN_FILE"]
        token_file = auth.admin_token_file
        assert file_mode(token_file) == 0o600
        admin = Path(token_file).read_text().strip()
        assert claims(admin)["admin"] is True and claims(admin)["exp"] > time.time() + 3600
        status = auth.status()
        assert status["auth"] == {"method": "HS256", "token_file": token_file}
        root = Path(status["root"])
        secret = (root / "auth" / "secret").read_text().strip()
        assert len(secret) >= 43  # at least 32 random bytes
        state_dir = os.environ.get("AIS_LOCAL_STATE_DIR", Path.home() / ".cache/aisbatchfs/ais-local")
        state_file = Path(state_dir) / f"{auth.name}.json"
        for private in (state_file, root / "ais.json", root / "auth" / "secret"):
            assert file_mode(private) == 0o600, private
            assert secret in private.read_text()
        assert secret not in json.dumps(status)
        for pid in node_pids(auth):
            assert secret.encode() not in Path(f"/proc/{pid}/environ").read_bytes()

        assert claims(auth.token("--ttl", "60"))["exp"] - claims(auth.token())["iat"] <= 60
        ro = claims(auth.token("--read-only"))
        assert ro["admin"] is False and ro["clusters"] == [{"id": "", "perm": str(771 | 12288)}]
        one = claims(auth.token("--bucket", BUCKET, "--read-only"))
        (acl,) = one["buckets"]
        assert acl["bck"]["name"] == BUCKET and acl["perm"] == "771"
        assert acl["bck"]["namespace"]["uuid"]  # the cluster's UUID, as AuthN writes it

        # the cluster takes them: 401 without a token, 403 without the permission
        assert auth.http("GET", "daemon?what=smap", token="").status_code == 401
        assert auth.http("GET", "daemon?what=smap").status_code == 200
        assert auth.get(BUCKET, "dir/note.txt", token=auth.token("--bucket", BUCKET, "--read-only"))
        other = auth.token("--bucket", "other")
        r = auth.http("GET", f"objects/{BUCKET}/dir/note.txt", token=other)
        assert r.status_code == 403

    def test_no_token_refuses_the_mount(self, auth, tmp_path):
        tls = auth.tls_options()
        err = refused(auth.endpoint, tmp_path / "mp", "--bucket", BUCKET, *tls)
        assert "authentication required" in err, err
        err = refused(auth.endpoint, tmp_path / "mp", *tls)
        assert "authentication required" in err, err
        # an empty token file is no token either
        empty = tmp_path / "empty"
        empty.write_text("")
        err = refused(auth.endpoint, tmp_path / "mp", *tls, "-o", f"token_file={empty}")
        assert "authentication required" in err, err

    def test_a_token_in_token_file_reads_byte_exact(self, auth, mounter, tmp_path):
        tf = tmp_path / "token"
        write_token(tf, auth.token("--bucket", BUCKET, "--read-only"))
        # batched reads (the default) and ranged GETs
        m = mounter(auth.endpoint, "--bucket", BUCKET, *auth.tls_options(),
                    "-o", f"token_file={tf}", env=daemon_env())
        for name, blob in auth.files.items():
            assert (m.path / name).read_bytes() == blob, name
        client = m.stats()["client"]
        assert client.get("calls_moss", 0) >= 1 and client["unauthorized"] == 0
        # the whole cluster, with a token that reads every bucket
        write_token(tf, auth.token("--read-only"))
        m2 = mounter(auth.endpoint, *auth.tls_options(), "-o", f"token_file={tf}",
                     env=daemon_env(), name="all")
        assert {BUCKET, "other"} <= set(os.listdir(m2.path))
        assert (m2.path / BUCKET / "dir/note.txt").read_bytes() == auth.files["dir/note.txt"]

    def test_a_token_about_to_expire_is_re_read_before_it_expires(self, auth, mounter, tmp_path):
        tf = tmp_path / "token"
        short = auth.token("--bucket", BUCKET, "--read-only", "--ttl", "8")
        write_token(tf, short)
        m = self.mount(auth, mounter, tf)
        reader = Reader(m, auth.files)
        reader.one()
        write_token(tf, auth.token("--bucket", BUCKET, "--read-only"))  # no SIGHUP, no 401
        while time.time() < claims(short)["exp"] + 1.5:
            reader.one()
            time.sleep(0.2)
        client = m.stats()["client"]
        assert client["unauthorized"] == 0, client  # the short token was never used expired
        assert client["token_reloads"] == 1, client
        assert "expires in" in m.log_text()

    def test_an_expired_token_gives_eacces_until_a_fresh_one_is_in_the_file(
            self, auth, mounter, tmp_path):
        tf = tmp_path / "token"
        short = auth.token("--bucket", BUCKET, "--read-only", "--ttl", "5")
        write_token(tf, short)
        m = self.mount(auth, mounter, tf)
        reader = Reader(m, auth.files)
        reader.one()
        time.sleep(max(0.0, claims(short)["exp"] + 1 - time.time()))
        with pytest.raises(PermissionError):
            reader.one()
        assert m.stats()["client"]["unauthorized"] >= 1
        write_token(tf, auth.token("--bucket", BUCKET, "--read-only"))
        for _ in range(5):
            reader.one()  # no SIGHUP: the next request takes it
        assert m.stats()["client"]["token_reloads"] == 1

    def test_a_token_rejected_mid_read_is_re_read_on_401(self, auth, mounter, tmp_path):
        """Revoked on the cluster while its exp is hours away: only the 401 says so."""
        tf = tmp_path / "token"
        first = auth.token("--bucket", BUCKET, "--read-only", "--sub", "first")
        write_token(tf, first)
        m = self.mount(auth, mounter, tf)
        reader = Reader(m, auth.files)
        reader.one()
        second = auth.token("--bucket", BUCKET, "--read-only", "--sub", "second")
        write_token(tf, second)
        auth.revoke(first)
        for _ in range(5):
            reader.one()  # the first read gets a 401, takes the new token, and is retried
        client = m.stats()["client"]
        assert (client["unauthorized"], client["token_reloads"]) == (1, 1), client
        assert "the cluster answered 401" in m.log_text()
        auth.revoke(second)  # and now no fresh token is in the file
        with pytest.raises(PermissionError):
            reader.one()
        assert "token rejected" in m.log_text()

    def test_sighup_reloads_the_token_file(self, auth, mounter, tmp_path):
        tf = tmp_path / "token"
        # a sub of its own: a token is its claims, and `iat` has whole seconds, so a token
        # minted like one an earlier test revoked can be that very token, revoked
        first = auth.token("--bucket", BUCKET, "--read-only", "--sub", "before-hup")
        write_token(tf, first)
        m = self.mount(auth, mounter, tf)
        reader = Reader(m, auth.files)
        reader.one()
        write_token(tf, auth.token("--bucket", BUCKET, "--read-only", "--sub", "after-hup"))
        m.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "token re-read" not in m.log_text():
            assert time.monotonic() < deadline, m.log_text()
            time.sleep(0.05)
        auth.revoke(first)
        for _ in range(3):
            reader.one()
        assert m.stats()["client"]["unauthorized"] == 0  # the new token was in use already

    def test_a_token_without_permission_for_the_bucket_gives_eacces(self, auth, mounter,
                                                                    tmp_path):
        tf = tmp_path / "token"
        # may HEAD the bucket and list it, may not GET
        write_token(tf, auth.token("--bucket", BUCKET, "--perm", str(2 | 256 | 512)))
        m = mounter(auth.endpoint, "--bucket", BUCKET, *auth.tls_options(),
                    "-o", f"token_file={tf}", env=daemon_env())
        assert "note.txt" in os.listdir(m.path / "dir")
        assert (m.path / "dir" / "note.txt").stat().st_size == len(auth.files["dir/note.txt"])
        for name in ("dir/note.txt", "many/f010", "big.bin"):  # batched, batched, ranged
            with pytest.raises(PermissionError):
                (m.path / name).read_bytes()
        assert m.stats()["client"]["unauthorized"] == 0  # 403s: the token is fine, the right is not
        assert "insufficient permissions" in m.log_text()
        # a token for another bucket only: the mount itself is refused
        write_token(tf, auth.token("--bucket", "other", "--read-only"))
        err = refused(auth.endpoint, tmp_path / "mp2", "--bucket", BUCKET, *auth.tls_options(),
                      "-o", f"token_file={tf}")
        assert "insufficient permissions" in err, err

    def test_redirects_stay_on_https_and_do_not_carry_the_token(self, auth):
        token = auth.token("--bucket", BUCKET, "--read-only")
        client, hops = recording_client(auth, token)
        read_through(client, auth.files)
        for (_, _, proxy_had), (_, status, target_had) in check_redirect_hops(auth, hops):
            # requests drops Authorization when a redirect changes host or port; v1.5.0
            # targets serve a redirected request without one
            assert proxy_had and not target_had and status in (200, 206)

    def test_the_token_never_shows_in_logs_ps_metrics_or_stats(self, auth, mounter, tmp_path):
        tf = tmp_path / "token"
        token = auth.token("--bucket", BUCKET, "--read-only", "--sub", "never-shown")
        write_token(tf, token)
        port = free_port()
        m = self.mount(auth, mounter, tf, "--log-level", "debug",
                       "-o", f"metrics_addr=127.0.0.1:{port}")
        reader = Reader(m, auth.files)
        reader.one()
        auth.revoke(token)  # AIStore's 401 for a revoked (or expired) token quotes the token
        with pytest.raises(PermissionError):
            reader.one()
        other = auth.token("--bucket", BUCKET, "--read-only", "--sub", "env")
        m2 = mounter(auth.endpoint, "--bucket", BUCKET, *auth.tls_options(), "--log-level",
                     "debug", env=daemon_env(AIS_AUTHN_TOKEN=other), name="env")
        assert (m2.path / "dir/note.txt").read_bytes() == auth.files["dir/note.txt"]

        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        assert b"aisbatchfs_client_unauthorized" in metrics
        log = m.log_text()
        assert "token rejected" in log and "<token>" in log  # the server's quote, scrubbed
        signature = token.rsplit(".", 1)[1]
        for secret in (token, signature):
            assert secret not in log
            assert secret.encode() not in metrics
            assert secret not in json.dumps(m.stats())
        for secret in (other, other.rsplit(".", 1)[1]):
            assert secret not in m2.log_text() and secret not in json.dumps(m2.stats())
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    cmdline = (d / "cmdline").read_bytes()
                except OSError:
                    continue
                assert signature.encode() not in cmdline and other.rsplit(".", 1)[1].encode() \
                    not in cmdline, d
