"""The examples in a prompt's docstring, as asserts: the tests a user can see at routing time.

A router that checks a completion before answering can only use what the user wrote, not the
benchmark's hidden tests. HumanEval writes its examples in a dozen informal notations (doctests,
``f(x) == y``, ``f(x) ➞ y``, "For x = ... the output should be ...", "Input: / Output:" blocks and
more), so each notation gets its own small reader here. A wrong visible test would fail a correct
completion, so anything that cannot be read without guessing is dropped: the call must name the
entry point and use only literals and builtins, the expected value must be a Python literal
(``ast.literal_eval``; a bare ``true``/``false`` is read as ``True``/``False``), and examples that
name another function (HumanEval/81, /149) or an argument that is not a parameter are skipped.

Only text is parsed (``ast`` and regular expressions); the prompt's code is never run, so any
prompt is safe to pass in.

Floats are compared with a tolerance, so a correct solution that rounds differently still passes:
``|actual - expected| <= 1e-6 * max(1, |expected|)`` (relative for large values, absolute near
zero), written out in the assert so it needs no import. A flat list or tuple of numbers
holding a float is compared element-wise by the same rule (same type and length); floats nested
deeper are compared exactly. ``None`` is checked with ``is None``, everything else with ``==``.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterator
from itertools import accumulate

REL_TOL = 1e-6  # float tolerance, relative to max(1, |expected|)

_BUILTINS = frozenset(dir(builtins))
_Example = tuple[int, ast.expr, object]  # (offset in the docstring, actual expression, expected value)
_Values = list[tuple[str | None, object]]  # (parameter name or None, argument value)

_PROMPT = re.compile(r"[ \t]*>>>[ \t]?(.*)")
_CONTINUATION = re.compile(r"[ \t]*\.\.\.[ \t]?(.*)")
_ARROW = re.compile(r"[ \t]*(?:#[ \t]*)?(?:==>|=>|==|->|➞|→|=|returns\b|should\s+return\b)[ \t]*")
_ATOM = re.compile(r"[-+]?(?:\d[\d_]*(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|[A-Za-z_]\w*)")
_TAIL = re.compile(r"[ \t]*[.,;:]?[ \t]*(?:(?:#|\(|and\b).*)?")  # prose after an expected value
_LAST_EQUALS = re.compile(r"(?<![=<>!])=(?![=>])(?!.*(?<![=<>!])=(?![=>]))")
_BINDING = re.compile(r"[ \t\n,]*(?:and[ \t]+)?([A-Za-z_]\w*)[ \t]*[=:](?!=)[ \t]*")
_FOR = re.compile(r"\b[Ff]or[ \t]+(?=[A-Za-z_]\w*[ \t]*=(?!=))")
_SHOULD_BE = re.compile(r"the[ \t]+(?:output|result)[ \t]+should[ \t]+be[ \t]*")
_INPUT = re.compile(r"Input:[ \t]*((?:(?!\n[ \t]*\n).)*?)\s*Output:[ \t]*", re.S)
_RETURN_LINE = re.compile(r"[ \t]*return\b(?:[ \t]*=)?[ \t]*")


def docstring_asserts(prompt: str, entry_point: str) -> list[str]:
    """Assert statements (one per example, each a single line of valid Python that calls `entry_point`).

    The examples are read from the entry point's docstring (the whole prompt when it does not parse
    as Python), in document order, without duplicates. Examples that cannot be read soundly are left
    out, so a prompt may yield none.
    """
    text, params = _docstring(prompt, entry_point)
    text, examples = _doctests(text, entry_point)
    examples += _free_calls(text, entry_point)
    examples += _stated_inputs(text, entry_point, params)
    asserts: list[str] = []
    for _, actual, expected in sorted(examples, key=lambda example: example[0]):
        line = _render(actual, expected, entry_point)
        if line is not None and line not in asserts:
            asserts.append(line)
    return asserts


def _docstring(prompt: str, entry_point: str) -> tuple[str, list[str] | None]:
    """The entry point's docstring as written in the source (escapes kept), and its parameter names."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return prompt, None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entry_point:
            params = [arg.arg for arg in node.args.posonlyargs + node.args.args]
            # The first string statement, not only body[0]: HumanEval/115 imports before its docstring.
            for stmt in node.body:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                    if isinstance(stmt.value.value, str):
                        source = ast.get_source_segment(prompt, stmt.value) or ""
                        return re.sub(r"^[rRuU]*(\"\"\"|'''|\"|')(.*)\1$", r"\2", source, flags=re.S), params
            return "", params
    return prompt, None


def _doctests(text: str, entry_point: str) -> tuple[str, list[_Example]]:
    """Examples written as `>>> expr` plus expected output, and the text with those lines blanked out."""
    lines = text.splitlines(keepends=True)
    examples: list[_Example] = []
    offsets = list(accumulate((len(line) for line in lines), initial=0))
    i = 0
    while i < len(lines):
        prompt = _PROMPT.fullmatch(lines[i].rstrip("\r\n"))
        if prompt is None:
            i += 1
            continue
        start, source = i, [prompt.group(1)]
        i += 1
        while i < len(lines) and (more := _CONTINUATION.fullmatch(lines[i].rstrip("\r\n"))):
            source.append(more.group(1))
            i += 1
        output: list[str] = []
        while i < len(lines) and lines[i].strip() and not _PROMPT.fullmatch(lines[i].rstrip("\r\n")):
            output.append(lines[i].strip())
            i += 1
        example = _doctest_example("\n".join(source), "\n".join(output), entry_point)
        if example is not None:
            examples.append((offsets[start], *example))
        for j in range(start, i):
            lines[j] = re.sub(r"[^\n]", " ", lines[j])
    return "".join(lines), examples


def _doctest_example(source: str, output: str, entry_point: str) -> tuple[ast.expr, object] | None:
    """(actual, expected) for one doctest; its output runs to the next blank or `>>>` line, as in doctest."""
    try:
        expr = ast.parse(source.strip(), mode="eval").body
    except SyntaxError:
        return None
    is_eq = isinstance(expr, ast.Compare) and len(expr.ops) == 1 and isinstance(expr.ops[0], ast.Eq)
    if is_eq and output in ("", "True"):  # `>>> f(x) == y`, written with or without doctest's True
        expected = _literal(ast.unparse(expr.comparators[0]))
        expr = expr.left
    elif output:
        expected = _literal(output)
    else:  # doctest prints nothing for None; only trusted for a plain call (not `f(x) [1, 2]`)
        is_call = isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name)
        expected = (None,) if is_call and expr.func.id == entry_point else None
    if expected is None or not _calls_entry(expr, entry_point):
        return None
    return expr, expected[0]


def _free_calls(text: str, entry_point: str) -> list[_Example]:
    """Examples written as `f(x) SEP y`, SEP one of == => ==> -> ➞ = returns, should return, # =>."""
    examples: list[_Example] = []
    for match in re.finditer(rf"(?<![\w.]){re.escape(entry_point)}\(", text):
        end = _close(text, match.end() - 1)
        if end is None:
            continue
        try:
            call = ast.parse(text[match.start():end], mode="eval").body
        except SyntaxError:
            continue
        arrow = _ARROW.match(text, end)
        if arrow is None or not _calls_entry(call, entry_point):
            continue
        expected = _expected_at(text, arrow.end())
        if expected is not None:
            examples.append((match.start(), call, expected[0]))
    return examples


def _stated_inputs(text: str, entry_point: str, params: list[str] | None) -> list[_Example]:
    """Examples that name the arguments instead of writing the call; see the three readers below."""
    if not params:
        return []
    examples: list[_Example] = []
    for offset, values, expected in [*_for_form(text), *_input_form(text), *_return_form(text)]:
        call = _call_from(values, params, entry_point)
        if call is not None:
            examples.append((offset, call, expected))
    return examples


def _for_form(text: str) -> Iterator[tuple[int, _Values, object]]:
    """`For lst = [1, 2], k = 3 the output should be 6` (prose may sit before `the output`)."""
    for match in _FOR.finditer(text):
        values, end = _bindings(text, match.end())
        should = _SHOULD_BE.search(text, end, _line_end(text, end))
        expected = _expected_at(text, should.end()) if should else None
        if values and expected is not None:
            yield match.start(), values, expected[0]


def _input_form(text: str) -> Iterator[tuple[int, _Values, object]]:
    """`Input: [4, 2, 3]` or `Input: arr = [1], k = 1` (or one `name : value` a line), then `Output: y`."""
    for match in _INPUT.finditer(text):
        given = match.group(1).strip()
        values, end = _bindings(given, 0)
        if not values:
            whole = _literal(given)
            values, end = ([(None, whole[0])], len(given)) if whole is not None else ([], 0)
        expected = _expected_at(text, match.end())
        if values and end == len(given.rstrip(" \t\n,")) and expected is not None:
            yield match.start(), values, expected[0]


def _return_form(text: str) -> Iterator[tuple[int, _Values, object]]:
    """A line `arr = [2, 1]`, then (in the same paragraph) a line `return [1, 2]` (HumanEval/105)."""
    lines = text.split("\n")
    offsets = list(accumulate((len(line) + 1 for line in lines), initial=0))
    for i, line in enumerate(lines):
        values, end = _bindings(line, 0)
        if not values or line[end:].strip():
            continue
        for j in range(i + 1, len(lines)):
            if returned := _RETURN_LINE.match(lines[j]):  # before the binding test: `return = ['One']`
                expected = _expected_at(text, offsets[j] + returned.end())
                if expected is not None:
                    yield offsets[i], values, expected[0]
                break
            if not lines[j].strip() or _bindings(lines[j], 0)[0]:
                break


def _bindings(text: str, start: int) -> tuple[_Values, int]:
    """`name = literal` (or `name : literal`) pairs from `start` on, and where they stop."""
    values: _Values = []
    while binding := _BINDING.match(text, start):
        atom = _atom_end(text, binding.end())
        if atom is None or (value := _literal(text[binding.end():atom])) is None:
            break
        values.append((binding.group(1), value[0]))
        start = atom
    return values, start


def _call_from(values: _Values, params: list[str], entry_point: str) -> ast.expr | None:
    """The call with the values in parameter order; None unless they name exactly the parameters."""
    names = [name for name, _ in values]
    if names == [None] and len(params) == 1:
        ordered = [values[0][1]]
    elif all(isinstance(name, str) for name in names) and sorted(map(str, names)) == sorted(params):
        given = dict(values)
        ordered = [given[param] for param in params]
    else:
        return None
    try:
        call = ast.parse(f"{entry_point}({', '.join(map(repr, ordered))})", mode="eval").body
    except SyntaxError:
        return None
    return call if _calls_entry(call, entry_point) else None


def _expected_at(text: str, start: int) -> tuple[object] | None:
    """The literal starting at `start` when only prose follows it on its line; else None.

    Also reads the worked-out form `19 - 5 - 6 = 8` (numbers and arithmetic, then `= literal`).
    The 1-tuple tells a literal None apart from no literal.
    """
    end = _atom_end(text, start)
    line_end = _line_end(text, end if end is not None else start)
    if end is not None and _TAIL.fullmatch(text, end, line_end):
        return _literal(text[start:end])
    equals = _LAST_EQUALS.search(text, start, line_end)
    if equals is None or not _is_arithmetic(text[start:equals.start()]):
        return None
    return _expected_at(text, len(text[:line_end]) - len(text[equals.end():line_end].lstrip(" \t")))


def _line_end(text: str, start: int) -> int:
    end = text.find("\n", start)
    return len(text) if end < 0 else end


def _is_arithmetic(source: str) -> bool:
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError:
        return False
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.Constant)
    return all(isinstance(node, allowed) for node in ast.walk(tree)) and isinstance(tree.body, ast.BinOp)


def _atom_end(text: str, start: int) -> int | None:
    """End of the one literal-like token (string, bracketed value, number or name) at `start`."""
    if start >= len(text):
        return None
    if text[start] in "\"'":
        return _string_end(text, start)
    if text[start] in "([{":
        return _close(text, start)
    atom = _ATOM.match(text, start)
    return atom.end() if atom else None


def _close(text: str, start: int) -> int | None:
    """Index just past the bracket that closes text[start], skipping string literals; None if unclosed."""
    depth, i = 0, start
    while i < len(text):
        if text[i] in "\"'":
            end = _string_end(text, i)
            if end is None:
                return None
            i = end
            continue
        depth += (text[i] in "([{") - (text[i] in ")]}")
        i += 1
        if depth == 0:
            return i
    return None


def _string_end(text: str, start: int) -> int | None:
    """Index just past a one-line string literal opened at text[start]."""
    i = start + 1
    while i < len(text) and text[i] != "\n":
        if text[i] == "\\":
            i += 2
        elif text[i] == text[start]:
            return i + 1
        else:
            i += 1
    return None


def _literal(source: str) -> tuple[object] | None:
    """(value,) for a Python literal, with a bare true/false read as True/False; None otherwise."""
    source = source.strip()
    if source in ("true", "false"):
        return (source == "true",)
    try:
        return (ast.literal_eval(source),)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _calls_entry(expr: ast.expr, entry_point: str) -> bool:
    """True when `expr` calls the entry point and every name in it is the entry point or a builtin."""
    names = [node.id for node in ast.walk(expr) if isinstance(node, ast.Name)]
    return _calls(expr, entry_point) and all(name == entry_point or name in _BUILTINS for name in names)


def _calls(tree: ast.AST, entry_point: str) -> bool:
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    return any(isinstance(call.func, ast.Name) and call.func.id == entry_point for call in calls)


def _render(actual: ast.expr, expected: object, entry_point: str) -> str | None:
    """One assert line (see the module docstring for the comparison rules); None if it would be unsound."""
    source = ast.unparse(actual)
    if not isinstance(actual, ast.Call | ast.Name | ast.Subscript | ast.Attribute):
        source = f"({source})"
    if expected is None:
        line = f"assert {source} is None"
    elif isinstance(expected, float):
        line = f"assert abs({source} - {expected!r}) <= {REL_TOL!r} * max(1.0, abs({expected!r}))"
    elif _float_sequence(expected):
        kind = type(expected).__name__
        line = (f"assert (lambda r: isinstance(r, {kind}) and len(r) == {len(expected)} and all("
                f"abs(a - b) <= {REL_TOL!r} * max(1.0, abs(b)) for a, b in zip(r, {expected!r})))({source})")
    else:
        line = f"assert {source} == {expected!r}"
    return line if _sound(line, expected, entry_point) else None


def _float_sequence(value: object) -> bool:
    if not isinstance(value, list | tuple) or not value:
        return False
    numbers = all(isinstance(item, int | float) and not isinstance(item, bool) for item in value)
    return numbers and any(isinstance(item, float) for item in value)


def _sound(line: str, expected: object, entry_point: str) -> bool:
    """The line parses, calls the entry point, and the expected value survives repr (no inf/nan)."""
    try:
        tree = ast.parse(line)
    except SyntaxError:
        return False
    round_trip = expected is None or _literal(repr(expected)) == (expected,)
    return round_trip and "\n" not in line and len(tree.body) == 1 and _calls(tree, entry_point)
