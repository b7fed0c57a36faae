"""What a capability facade needs of the gateway: an operation run along a capability's chain.

Facades in the core (`gw.http`) are typed against this, not the Gateway class, so the gateway
can build them without an import circle; `resilient.gateway.Gateway` is the implementation.
"""

from __future__ import annotations

from typing import Protocol

import httpx

from resilient.pipeline import Operation
from resilient.result import Result


class Caller(Protocol):
    def call(
        self,
        capability: str,
        op: Operation,
        *,
        deadline: float | None = None,
        defer: bool | None = None,
    ) -> Result[httpx.Response]:
        """Run `op` along the capability's chain, blocking (see Gateway.call)."""
        ...

    async def acall(
        self,
        capability: str,
        op: Operation,
        *,
        deadline: float | None = None,
        defer: bool | None = None,
    ) -> Result[httpx.Response]:
        """Run `op` along the capability's chain on the running event loop."""
        ...
