"""Azure OpenAI on the simulator: `POST {prefix}/openai/deployments/{deployment}/chat/completions
?api-version=...` with the `api-key` header. Point a provider's base_url (its endpoint) at
`sim.url(prefix)`.

Past Azure's own address and auth, a deployment answers as OpenAI does: the openai routes'
answer logic serves it, for the model `state.models` maps the deployment to (the deployment's
name by default). `content_filter_error()` is Azure's answer to a prompt its content filter
refused, handy as a fault body.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from resilient.testing.routes.openai import OpenAIState
from resilient.testing.simulator import SimRequest, SimResponse, Simulator


def error(status: int, code: str, message: str, **extra: Any) -> SimResponse:
    """An answer in Azure OpenAI's error shape."""
    return SimResponse.json({"error": {"code": code, "message": message, **extra}}, status=status)


def content_filter_error() -> dict[str, Any]:
    """The body of Azure's 400 for a prompt its content filter refused."""
    return {
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
            "content management policy. Please modify your prompt and retry.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {
                    "hate": {"filtered": False, "severity": "safe"},
                    "self_harm": {"filtered": False, "severity": "safe"},
                    "sexual": {"filtered": False, "severity": "safe"},
                    "violence": {"filtered": True, "severity": "high"},
                },
            },
        }
    }


class AzureOpenAIState:
    """What the simulated Azure OpenAI answered (`completions`), and how it answers."""

    def __init__(self) -> None:
        self.openai = OpenAIState()  # the answers: OpenAI's, `reply` included
        self.models: dict[str, str] = {}  # deployment -> the model it serves
        self.api_versions: list[str] = []  # the api-version of every request answered

    @property
    def completions(self) -> list[dict[str, Any]]:
        return self.openai.completions

    def chat_completions(self, request: SimRequest) -> SimResponse:
        key = request.headers.get("api-key")
        if not key:
            return error(
                401,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make "
                "sure to provide a valid key for an active subscription and use a correct "
                "regional API endpoint for your resource.",
            )
        version = dict(parse_qsl(request.query)).get("api-version")
        if not version:
            return error(404, "404", "Resource not found")
        try:
            body = request.json()
        except ValueError:
            return error(400, "BadRequest", "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return error(400, "BadRequest", "Invalid type for request body: expected an object.")
        deployment = request.params["deployment"]
        self.api_versions.append(version)
        served = {**body, "model": self.models.get(deployment, deployment)}
        return self.openai.chat_completions(
            SimRequest(
                request.method,
                request.path,
                request.query,
                {**request.headers, "authorization": f"Bearer {key}"},
                json.dumps(served).encode(),
                request.params,
            )
        )


def mount(sim: Simulator, prefix: str) -> AzureOpenAIState:
    state = AzureOpenAIState()
    path = f"{prefix}/openai/deployments/{{deployment}}/chat/completions"
    sim.route("POST", path, state.chat_completions)
    return state
