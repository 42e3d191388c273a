"""Server-sent events for streamed Chat Completions: relaying an upstream stream, and turning a whole
answer into a stream (verified requests are judged before the caller sees a byte).

The router asks every upstream for a final usage chunk (`stream_options.include_usage`) so the
spend metric counts streamed answers too; that chunk reaches the caller only if the caller asked
for it, so clients that do not expect a chunk without choices never see one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

Write = Callable[[bytes], Awaitable[None]]
DONE = b"data: [DONE]\n\n"


def _usage_of(event: bytes) -> tuple[dict | None, bool]:
    """(usage, usage_only) of one SSE event; cheap for the common event that has no usage."""
    if b'"usage"' not in event:
        return None, False
    for line in event.splitlines():
        if line.startswith(b"data:"):
            try:
                obj = json.loads(line[5:])
            except ValueError:
                return None, False
            if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
                return obj["usage"], not obj.get("choices")
    return None, False


async def relay(chunks: AsyncIterator[bytes], write: Write, keep_usage: bool) -> dict | None:
    """Copy the upstream's events (its body, as it arrives) to `write`, event by event; returns the
    usage it reported."""
    usage, buf = None, b""
    async for chunk in chunks:
        # CRLF line ends become LF on the unsplit remainder too: a CRLF can straddle two chunks
        *events, buf = (buf + chunk).replace(b"\r\n", b"\n").split(b"\n\n")
        for event in events:
            found, usage_only = _usage_of(event)
            usage = found or usage
            if not (usage_only and not keep_usage):
                await write(event + b"\n\n")
    if buf.strip():
        await write(buf)
    return usage


def from_answer(data: dict[str, Any], keep_usage: bool) -> bytes:
    """A whole chat.completion as the chunks a streaming upstream would have sent."""
    base = {"id": data.get("id", ""), "object": "chat.completion.chunk", "created": data.get("created", 0),
            "model": data.get("model", "")}
    events = []
    for choice in data.get("choices") or []:
        message = choice.get("message") or {}
        delta = {"role": message.get("role", "assistant"), "content": message.get("content") or ""}
        events.append({**base, "choices": [{"index": choice.get("index", 0), "delta": delta, "finish_reason": None}]})
        events.append({**base, "choices": [{"index": choice.get("index", 0), "delta": {},
                                            "finish_reason": choice.get("finish_reason", "stop")}]})
    if keep_usage and data.get("usage"):
        events.append({**base, "choices": [], "usage": data["usage"]})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + DONE
