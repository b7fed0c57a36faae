"""Facebook Pages: a post on a Page's feed through the Graph API.

`POST https://graph.facebook.com/v{version}/{page_id}/feed`, form-encoded `message`, `link` and
`access_token` (a Page access token: the provider's api_key); 200 `{"id": "{page_id}_{post_id}"}`
(https://developers.facebook.com/docs/pages-api/posts). Errors are
`{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`
(https://developers.facebook.com/docs/graph-api/guides/error-handling). No idempotency key.

Rules: the defaults. The Graph API says what went wrong in the body's `code`, not the status:
an expired token (190) comes as a 400 and is final like any 400, and a throttled Page (4, 17,
32) as a 403, which fails over and so parks the post.
"""

from __future__ import annotations

import httpx
from pydantic import Field, field_validator

from providers.adapter import api_key, base_url, json_field
from providers.models import Post
from providers.social._common import Options, read_options
from resilient import registry
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings

API = "https://graph.facebook.com"


class FacebookOptions(Options):
    """Config keys of a "facebook" provider: the Page, and the Graph API version ("24.0")."""

    page_id: str = Field(pattern=r"^\d+$")
    version: str = Field(default="24.0", pattern=r"^v?\d+\.\d+$")

    @field_validator("version")
    @classmethod
    def _bare(cls, value: str) -> str:
        return value.removeprefix("v")


class FacebookAdapter:
    honours_idempotency_key = False

    def __init__(self, options: FacebookOptions) -> None:
        self._path = f"/v{options.version}/{options.page_id}/feed"

    def build(self, model: Post, provider: ProviderRuntime, operation_id: str) -> httpx.Request:
        form = {"message": model.text, "access_token": api_key(provider)}
        if model.link is not None:
            form["link"] = model.link
        return httpx.Request("POST", base_url(provider, API) + self._path, data=form)

    def message_id(self, response: httpx.Response) -> str | None:
        return json_field(response, "id")


def _factory(settings: ProviderSettings) -> FacebookAdapter:
    return FacebookAdapter(read_options(FacebookOptions, settings))


registry.register(registry.ProviderKind("facebook", "social", FacebookOptions, _factory))
