"""The LLM chat capability: `gw.llm.chat(...)` and `gw.llm.stream(...)` over "openai" (and
OpenAI-compatible), "azure_openai", "anthropic" and "gemini" providers. Importing it registers
their adapters and the "llm" facade."""

from providers.llm import anthropic, azure, facade, gemini, openai
from providers.llm.models import ChatResponse, ContextLengthExceeded, ToolCall, Usage
from providers.llm.streaming import ChatChunk, StreamInterrupted

__all__ = [
    "ChatChunk",
    "ChatResponse",
    "ContextLengthExceeded",
    "StreamInterrupted",
    "ToolCall",
    "Usage",
    "anthropic",
    "azure",
    "facade",
    "gemini",
    "openai",
]
