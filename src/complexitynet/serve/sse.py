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


class Redactor:
    """Removes a secret from the text a stream spells out across its deltas (a key split over two
    events is still the key once the client joins them): each choice's last len(secret) - 1
    characters wait for its next delta, and are flushed with its finish_reason or before [DONE]."""

    def __init__(self, secret: str) -> None:
        self.secret, self.keep = secret, len(secret) - 1
        self.pending: dict[int, str] = {}
        self.template: dict[str, Any] = {}

    def event(self, event: bytes) -> bytes:
        if event.strip() == DONE.strip():
            return self.flush() + event
        lines = event.split(b"\n")
        for n, line in enumerate(lines):
            if not line.startswith(b"data:"):
                continue
            try:
                obj = json.loads(line[5:])
            except ValueError:
                return event
            if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
                return event
            self.template = {k: obj[k] for k in ("id", "object", "created", "model") if k in obj}
            for choice in obj["choices"]:
                if isinstance(choice, dict) and isinstance(choice.get("delta"), dict):
                    self._choice(choice)
            lines[n] = b"data: " + json.dumps(obj).encode()
        return b"\n".join(lines)

    def _choice(self, choice: dict[str, Any]) -> None:
        index, delta = choice.get("index", 0), choice["delta"]
        text = self.pending.pop(index, "") + (delta.get("content") or "")
        text = text.replace(self.secret, "[redacted]")
        if choice.get("finish_reason") is None and len(text) > self.keep:
            self.pending[index], text = text[len(text) - self.keep:], text[:len(text) - self.keep]
        elif choice.get("finish_reason") is None:
            self.pending[index], text = text, ""
        if "content" in delta or text:
            delta["content"] = text

    def flush(self) -> bytes:
        """What is still held back, as one event per choice (a stream that ended without finish_reason)."""
        held = [{**self.template, "choices": [{"index": i, "delta": {"content": t}, "finish_reason": None}]}
                for i, t in sorted(self.pending.items()) if t]
        self.pending.clear()
        return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in held)


async def relay(chunks: AsyncIterator[bytes], write: Write, keep_usage: bool, secret: str | None = None) -> dict | None:
    """Copy the upstream's events (its body, as it arrives) to `write`, event by event, with `secret`
    taken out of the text they spell; returns the usage it reported."""
    usage, buf = None, b""
    redactor = Redactor(secret) if secret else None
    async for chunk in chunks:
        # CRLF line ends become LF on the unsplit remainder too: a CRLF can straddle two chunks
        *events, buf = (buf + chunk).replace(b"\r\n", b"\n").split(b"\n\n")
        for event in events:
            found, usage_only = _usage_of(event)
            usage = found or usage
            if usage_only and not keep_usage:
                continue
            await write((redactor.event(event) if redactor else event) + b"\n\n")
    if redactor is not None:
        await write(redactor.flush())
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
