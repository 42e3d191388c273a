"""Extract the program from a model's completion.

Chat models wrap code in Markdown fences, repeat the prompt, and add prose before and after;
base models may return only a function body. The rules, in order:
1. Fenced blocks (``` or ```python, closed or cut off) win: every Python block that parses on its
   own is kept, in order (later definitions override earlier ones, as Python does). If none
   parses, prose trimming (rule 2) is tried on the whole text; failing that, the first Python
   block that defines the entry point (else the first) is returned as it is, so the sandbox
   reports the syntax error rather than this function hiding it.
2. Without fences, leading and trailing prose lines are trimmed until the rest parses.
3. If the result does not define the entry point and a prompt stub is given (HumanEval), the
   completion is a body: the stub is prepended. A name bound by assignment (`f = lambda x: ...`,
   `f = helper`) defines the entry point as much as `def f` does.
Before all that, the completion is cut at the first chat-template end token (`<|eot_id|>`,
`<|im_end|>`, `<|endoftext|>`, `</s>`, ...): what follows one is not the model's answer.
The extracted code is what the model wrote; nothing is rewritten or pruned.
"""

from __future__ import annotations

import ast
import re
import textwrap
import warnings
from dataclasses import dataclass

PY_LANGS = {"", "python", "py", "python3", "py3"}
_CODE_START = re.compile(
    r"^(def |async def |class |import |from \S+ import|@|#|if |for |while |try:|with |"
    r"[A-Za-z_][A-Za-z0-9_.]*\s*(=|\(|\[|:))"
)
_MAX_TRIM_TRIES = 400  # bounds the prose-trimming search on pathological completions
# End-of-turn and end-of-text tokens of common chat templates (Llama 3, ChatML/Qwen, GPT-2 family,
# Llama 2/Mistral, Phi-3, DeepSeek, Gemma, StarCoder2): a serving stack that does not strip them
# leaves them in the text.
STOP_TOKENS = ("<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>", "</s>", "<|end|>",
               "<|EOT|>", "<end_of_turn>", "<|end▁of▁sentence|>", "<file_sep>")


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    closed: bool


def fenced_blocks(text: str) -> list[Block]:
    """Markdown code blocks in order; a block cut off by the end of the text counts (closed=False)."""
    blocks: list[Block] = []
    lang: str | None = None
    body: list[str] = []
    for line in text.split("\n"):
        stripped = line.strip()
        if lang is None:
            if stripped.startswith("```"):
                rest = stripped[3:].strip()
                if rest.endswith("```") and len(rest) > 3:  # ```code``` on one line
                    blocks.append(Block("", rest[:-3], True))
                    continue
                lang = rest.split()[0].lower() if rest else ""
                body = []
        elif stripped.startswith("```"):
            blocks.append(Block(lang, "\n".join(body), True))
            lang = None
        elif stripped.endswith("```"):  # closing fence glued to the last code line
            body.append(line.rstrip()[:-3])
            blocks.append(Block(lang, "\n".join(body), True))
            lang = None
        else:
            body.append(line)
    if lang is not None:
        blocks.append(Block(lang, "\n".join(body), False))
    return blocks


def parse_quietly(code: str) -> ast.Module | None:
    """The AST of `code`, or None if it does not parse; model code's SyntaxWarnings are silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. invalid escape sequences in model or MBPP code
        try:
            return ast.parse(code)
        except (SyntaxError, ValueError):  # ValueError: NUL bytes
            return None


def parses(code: str) -> bool:
    return parse_quietly(code) is not None


def defines(code: str, name: str) -> bool:
    """Whether `code` defines `name` at the start of a line: def, class, or an assignment (a lambda,
    an alias of another function)."""
    name = re.escape(name)
    return re.search(rf"^\s*(?:(?:async\s+def|def|class)\s+{name}\b|{name}\s*(?::[^=\n]*)?=(?!=))", code,
                     re.M) is not None


def cut_at_stop_token(text: str) -> str:
    """`text` up to the first chat-template end token (STOP_TOKENS), if any."""
    cut = min((i for i in (text.find(t) for t in STOP_TOKENS) if i >= 0), default=len(text))
    return text[:cut]


def trim_prose(text: str, entry_point: str | None = None) -> str:
    """The longest span of lines that parses, starting at a code-looking line (see module doc)."""
    if parses(text):
        return text
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if _CODE_START.match(line)]
    tries = 0
    for start in starts:
        for end in range(len(lines), start, -1):
            tries += 1
            if tries > _MAX_TRIM_TRIES:
                return text
            chunk = "\n".join(lines[start:end])
            if parses(chunk) and (entry_point is None or defines(chunk, entry_point)):
                return chunk
    return text


def extract_code(completion: str, entry_point: str | None = None, prompt_stub: str | None = None) -> str:
    """The program in `completion` (module doc); always ends with exactly one newline."""
    text = cut_at_stop_token(completion.replace("\r\n", "\n"))
    python_blocks = [b for b in fenced_blocks(text) if b.lang in PY_LANGS]
    if python_blocks:
        bodies = [textwrap.dedent(b.text) for b in python_blocks]
        good = [b for b in bodies if b.strip() and parses(b)]
        if good:
            code = "\n\n".join(b.strip("\n") for b in good)
        else:
            # A broken fence (prose inside, a stray ``` later) can hide code that parses outside it.
            trimmed = trim_prose(text, entry_point)
            defining = [b for b in bodies if entry_point and defines(b, entry_point)]
            code = trimmed if parses(trimmed) else (defining or bodies)[0]
    else:
        code = trim_prose(text, entry_point)
    if entry_point and prompt_stub and not defines(code, entry_point):
        code = prompt_stub.rstrip("\n") + "\n" + code.lstrip("\n")
    return code.strip("\n") + "\n"
