"""3. SDK clients (openai, stripe, twilio, sendgrid) through the resilient transport: not yet.

When it is measured: each SDK's client over `gw.transport(name)` against the same
SDK over plain httpx, both on the loopback simulator serving the SDK's route.
"""

from __future__ import annotations

from benchmarks.harness import RowSpec, Suite

SUITE = Suite(
    3,
    "SDK clients through the transport",
    (
        RowSpec("3.sdk.openai", "openai chat via gw transport", "µs/call", "openai SDK on httpx"),
        RowSpec("3.sdk.stripe", "stripe charge via gw transport", "µs/call", "stripe SDK"),
    ),
    run=None,
    pending_reason="not yet measured: comes later (issue #8, item 3)",
)
