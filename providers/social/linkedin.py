"""LinkedIn Posts API: a text post by an organization or a member.

`POST https://api.linkedin.com/rest/posts` with `Authorization: Bearer` (the provider's api_key),
`LinkedIn-Version: YYYYMM` and `X-Restli-Protocol-Version: 2.0.0`; JSON with author, commentary,
visibility, distribution and lifecycleState. 201 with an empty body: the post's URN is the
`x-restli-id` header
(https://learn.microsoft.com/en-us/linkedin/marketing/community-management/shares/posts-api).
No idempotency key is documented.

The commentary is in LinkedIn's "little" text format, where reserved characters must be
escaped with a backslash, or the post is cut at the first one
(https://learn.microsoft.com/en-us/linkedin/marketing/community-management/shares/little-text-format).

Rules: a 426 (the LinkedIn-Version is not active) fails over: it is our config, as a bad token
is, so the post is parked and goes out once ops set a live version.
"""

from __future__ import annotations

import re

import httpx
from pydantic import Field

from providers.adapter import base_url
from providers.models import Post
from providers.social._common import Options, bearer, read_options, text_with_link
from resilient import registry
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings

API = "https://api.linkedin.com"
_RESERVED = re.compile(r"([\\|{}@\[\]()<>#*_~])")


class LinkedInOptions(Options):
    """Config keys of a "linkedin" provider: who posts, and the API version it speaks."""

    author: str = Field(pattern=r"^urn:li:(organization|person):[^\s:]+$")
    version: str = Field(default="202605", pattern=r"^\d{6}(\.\d{2})?$")


def little_text(text: str) -> str:
    """`text` as plain "little" text: every reserved character escaped."""
    return _RESERVED.sub(r"\\\1", text)


class LinkedInAdapter:
    honours_idempotency_key = False

    def __init__(self, options: LinkedInOptions) -> None:
        self._options = options

    def build(self, model: Post, provider: ProviderRuntime, operation_id: str) -> httpx.Request:
        headers = {
            **bearer(provider),
            "LinkedIn-Version": self._options.version,
            "X-Restli-Protocol-Version": "2.0.0",
        }
        body = {
            "author": self._options.author,
            "commentary": little_text(text_with_link(model)),
            "visibility": "PUBLIC",
            "distribution": {
                "feedDistribution": "MAIN_FEED",
                "targetEntities": [],
                "thirdPartyDistributionChannels": [],
            },
            "lifecycleState": "PUBLISHED",
            "isReshareDisabledByAuthor": False,
        }
        return httpx.Request(
            "POST", base_url(provider, API) + "/rest/posts", headers=headers, json=body
        )

    def message_id(self, response: httpx.Response) -> str | None:
        urn: str | None = response.headers.get("x-restli-id")
        return urn


def _factory(settings: ProviderSettings) -> LinkedInAdapter:
    return LinkedInAdapter(read_options(LinkedInOptions, settings))


registry.register(
    registry.ProviderKind("linkedin", "social", LinkedInOptions, _factory, (("426", "failover"),))
)
