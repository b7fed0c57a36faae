"""The LLM chat capability: `gw.llm.chat(...)` over "openai" (and OpenAI-compatible) and
"anthropic" providers. Importing it registers both adapters and the "llm" facade."""

from providers.llm import anthropic, facade, openai
from providers.llm.models import ChatResponse, ContextLengthExceeded, ToolCall, Usage

__all__ = [
    "ChatResponse",
    "ContextLengthExceeded",
    "ToolCall",
    "Usage",
    "anthropic",
    "facade",
    "openai",
]
