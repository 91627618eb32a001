"""How the client reaches the cluster: endpoint, credentials, TLS, deadlines.

The environment is read the way the official Python SDK reads it, so a machine set up for the
SDK works unchanged: AIS_ENDPOINT, AIS_AUTHN_TOKEN, AIS_SKIP_VERIFY_CRT (then the older
AIS_SKIP_VERIFY), AIS_CLIENT_CA, and AIS_CRT + AIS_CRT_KEY for mutual TLS.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

_TRUTHY = {"1", "t", "true", "y", "yes", "on"}  # the SDK's utils.parse_bool


@dataclass(frozen=True)
class Deadlines:
    """Total time a call may take, enforced by closing its socket (not per socket operation).

    metadata: listings, HEAD, list buckets — short, so `ls` fails fast when the cluster is gone.
    read: one GET or one GetBatch reply, from the request to its last byte.
    connect: TCP connect (and TLS handshake) of one connection.
    idle: longest silence inside a reply; a slow-drip server is still caught by the total.
    """

    metadata: float = 10.0
    read: float = 30.0
    connect: float = 3.0
    idle: float = 25.0  # above GetBatch's get_batch.max_wait (20 s in 5.0) before its first byte


@dataclass(frozen=True)
class ClientConfig:
    endpoint: str
    token: str | None = field(default=None, repr=False)
    verify: bool | str = True  # False, True (system CAs) or a CA bundle path
    cert: tuple[str, str] | None = None  # (client certificate, key) for mutual TLS
    deadlines: Deadlines = Deadlines()
    # pause before the first retry of a transient error (429, 5xx, no targets, a refused
    # connection); doubling up to max_backoff, jittered, for as long as the call's deadline
    # allows: a target restart takes seconds, and a reader would rather wait than fail
    backoff: float = 0.05
    max_backoff: float = 1.0
    pool_size: int = 32  # connections per pool (metadata and data pools are separate)
    user_agent: str = "aisbatchfs"

    @classmethod
    def from_env(
        cls, endpoint: str | None = None, env: Mapping[str, str] | None = None, **overrides
    ) -> ClientConfig:
        """Build from explicit values, falling back to the SDK's environment variables."""
        env = os.environ if env is None else env
        endpoint = endpoint or env.get("AIS_ENDPOINT")
        if not endpoint:
            raise ValueError("no AIStore endpoint: pass one or set AIS_ENDPOINT")
        if "://" not in endpoint:
            endpoint = "http://" + endpoint
        verify: bool | str = True
        skip = env.get("AIS_SKIP_VERIFY_CRT", env.get("AIS_SKIP_VERIFY", ""))
        if skip.strip().lower() in _TRUTHY:
            verify = False
        elif env.get("AIS_CLIENT_CA"):
            verify = env["AIS_CLIENT_CA"]
        cert = None
        if env.get("AIS_CRT") and env.get("AIS_CRT_KEY"):
            cert = (env["AIS_CRT"], env["AIS_CRT_KEY"])
        base = cls(
            endpoint=endpoint.rstrip("/"),
            token=env.get("AIS_AUTHN_TOKEN") or None,
            verify=verify,
            cert=cert,
        )
        return replace(base, **overrides)
