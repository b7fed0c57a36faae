"""What the social adapters share: options from config, bearer auth, and a post's text with its
link, written the way networks that have no link field show one."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from providers.adapter import api_key
from providers.models import Post
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings

OptionsT = TypeVar("OptionsT", bound=BaseModel)


class Options(BaseModel):
    """Base of the social kinds' config keys: unknown keys are typos, and settings never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_options(model: type[OptionsT], settings: ProviderSettings) -> OptionsT:
    """The kind's options: config validated them at load; settings built by hand are checked
    here, when the gateway builds the adapter, not on the first post."""
    return model.model_validate(dict(settings.options))


def bearer(provider: ProviderRuntime) -> dict[str, str]:
    """The Authorization header carrying the provider's api_key as an OAuth bearer token."""
    return {"Authorization": f"Bearer {api_key(provider)}"}


def text_with_link(post: Post) -> str:
    """The text, with the link on its own line unless the text already carries it: X, Mastodon,
    Bluesky and LinkedIn turn a URL written in the text into a link."""
    if post.link is None or post.link in post.text:
        return post.text
    return f"{post.text}\n\n{post.link}"
