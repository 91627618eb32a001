"""Clusters with TLS or AuthN for tests: `scripts/ais-local start --https/--mtls/--auth`.

The test process talks to them with plain `requests`, passing `verify` on every request:
requests lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE in the environment override a session's CA
bundle (the SDK has that problem, so it is not used here). Tokens are minted by
`scripts/ais-local token`, from the secret the cluster's state file keeps.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import AIS_LOCAL, START_TIMEOUT


@dataclass
class SecureCluster:
    name: str
    lines: dict[str, str]  # what `start` printed: AIS_ENDPOINT=..., AIS_CLIENT_CA=...
    stdout: str
    _session: requests.Session = field(default_factory=lambda: _plain_session(), repr=False)

    @property
    def endpoint(self) -> str:
        return self.lines["AIS_ENDPOINT"]

    @property
    def ca(self) -> str:
        return self.lines["AIS_CLIENT_CA"]

    @property
    def cert(self) -> tuple[str, str] | None:
        if "AIS_CRT" in self.lines:
            return self.lines["AIS_CRT"], self.lines["AIS_CRT_KEY"]
        return None

    @property
    def admin_token_file(self) -> str | None:
        return self.lines.get("AIS_AUTHN_TOKEN_FILE")

    def tls_options(self, *, cert: bool = True) -> list[str]:
        """Mount options that trust the cluster (and present the client certificate)."""
        opts = ["-o", f"client_ca={self.ca}"]
        if cert and self.cert:
            opts += ["-o", f"client_cert={self.cert[0]}", "-o", f"client_key={self.cert[1]}"]
        return opts

    def run(self, *verb: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(AIS_LOCAL), *verb, "--name", self.name],
                              capture_output=True, text=True, timeout=timeout)

    def status(self) -> dict:
        r = self.run("status", timeout=60)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def token(self, *args: str) -> str:
        """A token from `ais-local token ARGS` (admin without arguments)."""
        r = self.run("token", *args, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    # -- direct requests (setup and reference reads) ---------------------------------------

    def http(self, method: str, path: str, *, token: str | None = None, timeout: float = 30,
             **kw) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        token = token if token is not None else self._admin_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self._session.request(method, f"{self.endpoint}/v1/{path}", headers=headers,
                                     verify=self.ca, cert=self.cert, timeout=timeout, **kw)

    def _admin_token(self) -> str:
        f = self.admin_token_file
        return Path(f).read_text().strip() if f else ""

    def create_bucket(self, name: str) -> None:
        r = self.http("POST", f"buckets/{name}", json={"action": "create-bck"})
        assert r.status_code == 200, r.text

    def put(self, bucket: str, name: str, data: bytes) -> None:
        # the proxy redirects the PUT to a target (307: requests sends the body again)
        r = self.http("PUT", f"objects/{bucket}/{name}", data=data)
        assert r.status_code == 200, r.text

    def get(self, bucket: str, name: str, token: str | None = None) -> bytes:
        r = self.http("GET", f"objects/{bucket}/{name}", token=token)
        assert r.status_code == 200, r.text
        return r.content

    def revoke(self, token: str) -> None:
        """Revoke `token` on the cluster: it keeps its signature and exp, and gets 401."""
        r = self.http("DELETE", "tokens", json={"tokens": [token]})
        assert r.status_code == 200, r.text


def _plain_session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # no proxy for loopback, no CA bundle from the environment
    return s


def start_secure(label: str, *flags: str, env: dict | None = None) -> SecureCluster:
    name = f"pytest-{os.getpid()}-{label}"  # conftest stops leftovers of dead test runs
    r = subprocess.run([sys.executable, str(AIS_LOCAL), "start", "--name", name, *flags],
                       capture_output=True, text=True, timeout=START_TIMEOUT, env=env)
    if r.returncode != 0:
        pytest.fail(f"could not start a local AIStore with {' '.join(flags)}:\n{r.stderr}", False)
    lines = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    return SecureCluster(name, lines, r.stdout)


def stop_secure(cluster: SecureCluster) -> None:
    r = cluster.run("stop", timeout=120)
    if r.returncode != 0:
        print(f"stopping {cluster.name} failed:\n{r.stderr}", file=sys.stderr)


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
