"""Mastodon: publish a status on the account's instance.

`POST {instance}/api/v1/statuses` with `Authorization: Bearer` (the provider's api_key) and JSON
`{"status": ...}`; 200 with the Status entity, whose `id` is the message id
(https://docs.joinmastodon.org/methods/statuses/#create). The instance is the provider's
`base_url`: there is no default one.

Mastodon honours `Idempotency-Key`: a repeat with the same key returns the status it already
made. Every attempt, and every replay, sends the operation id as that key, so a post that may
have gone out is retried safely. The instance keeps keys for one hour only.

Rules: the defaults (422 for an invalid status is final; 401/403 park the post).
"""

from __future__ import annotations

import httpx

from providers.adapter import json_field
from providers.models import Post
from providers.social._common import bearer, text_with_link
from resilient import registry
from resilient.errors import ResilientError
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings


class MastodonAdapter:
    honours_idempotency_key = True

    def __init__(self, instance: str) -> None:
        self._url = instance.rstrip("/") + "/api/v1/statuses"

    def build(self, model: Post, provider: ProviderRuntime, operation_id: str) -> httpx.Request:
        return httpx.Request(
            "POST",
            self._url,
            headers={**bearer(provider), "Idempotency-Key": operation_id},
            json={"status": text_with_link(model)},
        )

    def message_id(self, response: httpx.Response) -> str | None:
        return json_field(response, "id")


def _factory(settings: ProviderSettings) -> MastodonAdapter:
    if not settings.base_url:  # said when the gateway is built, not on the first post
        raise ResilientError(
            f"provider {settings.name!r} needs base_url: the address of its Mastodon instance"
        )
    return MastodonAdapter(settings.base_url)


registry.register(registry.ProviderKind("mastodon", "social", None, _factory))
