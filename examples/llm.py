"""gw.llm with a fallback chain across OpenAI, Anthropic and Gemini, against the bundled
simulator: no keys, no network.

    python examples/llm.py

The providers go down one by one: each chat is answered by the next of the chain, in its own
model, with its own usage. When all three are down, a chat marked cacheable is still answered,
from the degraded-mode cache, and the result says the answer is stale and how old it is.
Then all three are back, and a streamed answer is cut on openai after a few words: it starts
over on anthropic, whose first chunk says `restarted` (the caller drops the partial answer).
"""

from __future__ import annotations

import asyncio
import time

from resilient import ChainExhausted, Gateway
from resilient.config import settings_from_mapping
from resilient.testing import Fault, Simulator
from resilient.testing.routes import anthropic, gemini, openai

ASK = [
    {"role": "system", "content": "You answer customers of a bakery."},
    {"role": "user", "content": "When do you open on Sundays?"},
]


def config(sim: Simulator) -> dict[str, object]:
    fast = {"retry": {"attempts": 2, "backoff": "20ms..50ms"}, "timeout": "1s"}
    return {
        "providers": {
            "openai": {
                "kind": "openai",
                "api_key": "sk-example",
                "base_url": sim.url("/openai/v1"),
                "models": {"fast": "gpt-4o-mini"},
                **fast,
            },
            "anthropic": {
                "kind": "anthropic",
                "api_key": "sk-ant-example",
                "base_url": sim.url("/anthropic"),
                "models": {"fast": "claude-3-5-haiku-latest"},
                **fast,
            },
            "gemini": {
                "kind": "gemini",
                "api_key": "gemini-example-key",
                "base_url": sim.url("/gemini"),
                "models": {"fast": "gemini-2.0-flash"},
                **fast,
            },
        },
        "capabilities": {
            "llm": {"chain": ["openai", "anthropic", "gemini"], "cache": {"ttl": "1h"}},
        },
    }


async def main() -> None:
    with Simulator() as sim:
        openai.mount(sim, "/openai")
        anthropic.mount(sim, "/anthropic")
        gemini.mount(sim, "/gemini")
        settings = settings_from_mapping(config(sim), source="example")
        async with Gateway(settings) as gw:
            for down in (None, "openai", "anthropic"):
                if down is not None:
                    sim.inject(Fault.status(503), prefix=f"/{down}")
                    print(f"-- {down} is down")
                result = await gw.llm.chat(ASK, model="fast", temperature=0, cacheable=True)
                answer = result.value
                assert answer is not None
                tried = " -> ".join(f"{a.provider} {a.reason}" for a in result.attempts)
                print(f"chat    answered by {result.provider} ({answer.model}): {answer.text!r}")
                print(f"        usage {answer.usage}; attempts: {tried}")

            sim.inject(Fault.status(503), prefix="/gemini")
            print("-- gemini is down too")
            try:
                await gw.llm.chat(ASK, model="fast", temperature=0)
            except ChainExhausted:
                print("chat    not cacheable: ChainExhausted")
            stale = await gw.llm.chat(ASK, model="fast", temperature=0, cacheable=True)
            assert stale.value is not None and stale.stale_age is not None
            print(
                f"chat    cacheable: stale answer from the cache ({stale.stale_age:.1f}s old, "
                f"first given by {stale.provider}): {stale.value.text!r}"
            )

            sim.clear_faults()
            sim.inject(Fault.cut_stream(after=4), prefix="/openai", times=1)
            print("-- all back up; openai's stream is cut after its third word")
            await print_stream(gw)


async def print_stream(gw: Gateway) -> None:
    """Prints a stream chunk by chunk, as a caller would show it: a restarted chunk drops the
    text shown so far."""
    stream = gw.llm.stream(ASK, model="fast")
    async for chunk in stream:
        if chunk.restarted:
            print(f"stream  cut: started over on {chunk.provider}, the partial answer dropped")
        if chunk.text:
            print(f"stream  {chunk.provider}: {chunk.text!r}")
        if chunk.finish_reason is not None:
            print(f"stream  finished ({chunk.finish_reason}) by {chunk.model}, usage {chunk.usage}")
    assert stream.answer is not None
    print(f"stream  answer {stream.answer.text!r} after {stream.restarts} restart")


if __name__ == "__main__":
    started = time.monotonic()
    asyncio.run(main())
    print(f"done in {time.monotonic() - started:.1f}s")
