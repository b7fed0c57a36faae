"""Every capability with its fallback chain, against the bundled simulator: no keys, no Redis.

    python examples/capabilities.py

Each provider's API is simulated on 127.0.0.1 in its documented shapes; the first provider of
each chain is broken on purpose so the fallback serves, a payment shows that a card decline is
final, and a social post parks during an outage and is replayed once the network is back.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from providers import Charge, Email, Post, Sms
from resilient import FatalError, Gateway
from resilient.config import settings_from_mapping
from resilient.testing import Fault, Simulator
from resilient.testing.routes import mount

FAST = {"attempts": 2, "backoff": "20ms..50ms"}


def config(sim: Simulator, spool: Path) -> dict[str, object]:
    def provider(kind: str, **options: object) -> dict[str, object]:
        return {"kind": kind, "base_url": sim.url(f"/{kind}"), "retry": FAST, **options}

    return {
        "gateway": {"spool_path": str(spool)},
        "providers": {
            "sendgrid": provider("sendgrid", api_key="SG.example"),
            "mailgun": provider("mailgun", api_key="key-example", domain="mg.example.com"),
            "twilio": provider(
                "twilio",
                api_key="twilio-auth-token-example",
                account_sid="AC123",
                sender="+15550001",
            ),
            "vonage": provider("vonage", api_key="abcd1234", api_secret="s3cr3t", sender="Brand"),
            "stripe": provider("stripe", api_key="sk_test_example"),
            "paypal": provider("paypal", api_key="pp-secret", client_id="client-1"),
            "brand-mastodon": provider("mastodon", api_key="mastodon-token"),
        },
        "capabilities": {
            "email": {"chain": ["sendgrid", "mailgun"]},
            "sms": {"chain": ["twilio", "vonage"]},
            "payments": {"chain": ["stripe", "paypal"]},
            "social": {"chain": ["brand-mastodon"], "defer": True},
        },
    }


async def main() -> None:
    with Simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        for name in ("sendgrid", "mailgun", "twilio", "vonage", "stripe", "paypal", "mastodon"):
            mount(sim, name, prefix=f"/{name}")
        sim.inject(Fault.status(503), prefix="/sendgrid")  # the primary email provider is down
        sim.inject(Fault.status(503), prefix="/twilio")  # and so is the primary SMS provider
        settings = settings_from_mapping(config(sim, Path(tmp) / "spool.db"), source="example")
        async with Gateway(settings) as gw:
            email = await gw.email.send(
                Email(
                    sender="no-reply@example.com", to=["ada@example.com"], subject="Hi", text="hi"
                )
            )
            print(f"email   {email.status} by {email.provider}, id {email.value.message_id}")

            sms = await gw.sms.send(Sms(to="+15550100", body="Your code is 1234"))
            print(f"sms     {sms.status} by {sms.provider}, id {sms.value.message_id}")

            charge = Charge(
                amount=1999,
                currency="usd",
                payment_method="pm_card_visa",
                idempotency_key="order-42",
            )
            paid = await gw.payments.charge(charge)
            print(f"charge  {paid.status} by {paid.provider}, id {paid.value.message_id}")
            again = await gw.payments.charge(charge)  # the same order again: never charged twice
            print(f"again   {again.status}, deduplicated={again.value.deduplicated}")
            try:
                declined = Charge(
                    amount=500, currency="usd", payment_method="pm_card_chargeDeclined"
                )
                await gw.payments.charge(declined)
            except FatalError as exc:  # a decline is final: no retry, never sent to PayPal
                print(f"decline final: {exc.attempts[-1].reason}")

            outage = sim.inject(Fault.status(503), prefix="/mastodon")
            post = await gw.social.post(Post(account="brand-mastodon", text="We're back"))
            print(f"post    {post.status} (parked as {post.deferral_id})")
            outage.clear()
            for _ in range(100):  # the gateway replays its spool in the background
                if sim.effects(path="/mastodon/api/v1/statuses"):
                    break
                await asyncio.sleep(0.2)
            replayed = len(sim.effects(path="/mastodon/api/v1/statuses"))
            print(f"post    replayed after recovery: {replayed} status created")


if __name__ == "__main__":
    started = time.monotonic()
    asyncio.run(main())
    print(f"done in {time.monotonic() - started:.1f}s")
