"""X (Twitter) API v2: create a post.

`POST https://api.x.com/2/tweets` with `{"text": ...}` and an OAuth 2.0 user-context access token
as `Authorization: Bearer` (the provider's api_key); 201 `{"data": {"id", "text"}}`
(https://docs.x.com/x-api/posts/creation-of-a-post). X documents no idempotency key, so a post
that may have gone out is never sent again.

Rules: a 403 is final. X answers it for duplicate content and for actions the account may not
take; parking the post for a replay would only meet the same 403. A 429 carries
`x-rate-limit-reset`, an epoch time, not Retry-After: the classifier reads it (see the report).
"""

from __future__ import annotations

import httpx

from providers.adapter import base_url, json_field
from providers.models import Post
from providers.social._common import bearer, text_with_link
from resilient import registry
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings

API = "https://api.x.com"


class XAdapter:
    honours_idempotency_key = False

    def build(self, model: Post, provider: ProviderRuntime, operation_id: str) -> httpx.Request:
        return httpx.Request(
            "POST",
            base_url(provider, API) + "/2/tweets",
            headers=bearer(provider),
            json={"text": text_with_link(model)},
        )

    def message_id(self, response: httpx.Response) -> str | None:
        return json_field(response, "data", "id")


def _factory(settings: ProviderSettings) -> XAdapter:
    return XAdapter()


registry.register(registry.ProviderKind("x", "social", None, _factory, (("403", "fatal"),)))
