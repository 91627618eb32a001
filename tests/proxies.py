"""The proxies of scripts/ (standard-library scripts, not a package) importable from tests.

    from tests.proxies import Rule, proxied

    @pytest.fixture
    def proxy(cluster2):
        with proxied(cluster2.endpoint) as p:
            yield p
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

from fault_proxy import FaultProxy, Rule  # noqa: E402
from latency_proxy import LatencyProxy  # noqa: E402

__all__ = ["FaultProxy", "LatencyProxy", "Rule", "proxied"]


@contextlib.contextmanager
def proxied(endpoint: str, *rules: Rule, delay: float = 0.0,
            control_port: int | None = None) -> Iterator[FaultProxy]:
    """A started FaultProxy in front of the cluster at `endpoint`, with `rules` in place;
    stopped (every connection and stall ended) on the way out."""
    with FaultProxy(endpoint, delay=delay, control_port=control_port) as p:
        for rule in rules:
            p.add(rule)
        yield p
