import gzip
import json

import pytest

from complexitynet.extract import defines, extract_code, fenced_blocks, parses
from complexitynet.sources import FILES

STUB = 'def add(a, b):\n    """Add two numbers."""\n'


def test_plain_code_is_kept_verbatim():
    assert extract_code("\ndef add(a, b):\n    return a + b\n", "add") == "def add(a, b):\n    return a + b\n"


def test_python_fence_with_prose_around():
    text = "Sure! Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nThis adds `a` and `b`."
    assert extract_code(text, "add") == "def add(a, b):\n    return a + b\n"


def test_unclosed_fence_cut_by_token_limit_keeps_the_error_visible():
    text = "```python\ndef add(a, b):\n    return (a +"
    code = extract_code(text, "add")
    assert code.startswith("def add(a, b):") and not parses(code)


def test_several_blocks_keep_python_only_in_order():
    text = ("```python\nimport math\n```\nthen\n```bash\npip install x\n```\n"
            "```py\ndef add(a, b):\n    return math.fsum([a, b])\n```\n```\n>>> add(1, 2)\n3\n```")
    code = extract_code(text, "add")
    assert code == "import math\n\ndef add(a, b):\n    return math.fsum([a, b])\n"


def test_closing_fence_glued_to_last_line():
    blocks = fenced_blocks("```python\ndef f():\n    return 1```")
    assert blocks[0].text == "def f():\n    return 1" and blocks[0].closed


def test_prose_without_fences_is_trimmed():
    text = ("Here is the function you asked for:\n\ndef add(a, b):\n    return a + b\n\n"
            "This function returns the sum. It runs in O(1).")
    assert extract_code(text, "add") == "def add(a, b):\n    return a + b\n"


def test_repeated_prompt_before_code_is_trimmed():
    text = ("You are an expert Python programmer, and here is your task: Write a function to add. "
            "Your code should pass these tests:\n\nassert add(1, 2) == 3\n\ndef add(a, b):\n    return a + b")
    code = extract_code(text, "add")
    assert code.rstrip().endswith("return a + b") and "expert" not in code and parses(code)


def test_body_only_completion_gets_the_stub():
    code = extract_code("    return a + b\n", "add", STUB)
    assert code == STUB + "    return a + b\n" and parses(code)


def test_full_function_does_not_get_the_stub_twice():
    assert extract_code("def add(a, b):\n    return a + b", "add", STUB).count("def add") == 1


@pytest.mark.parametrize("text, expected", [
    # a function bound by assignment, with a stray closing fence after it
    ("count_odd = lambda nums: len([n for n in nums if n % 2])\n```", "count_odd = lambda nums: len([n for n in nums if n % 2])\n"),
    # an alias of a helper, with prose after
    ("def _count(nums):\n    return sum(n % 2 for n in nums)\ncount_odd = _count\n\nThis counts odd numbers.",
     "def _count(nums):\n    return sum(n % 2 for n in nums)\ncount_odd = _count\n"),
    ("count_odd: Callable = lambda nums: 0", "count_odd: Callable = lambda nums: 0\n"),  # annotated
])
def test_functions_defined_by_assignment(text, expected):
    assert defines(expected, "count_odd") and not defines("count_odd == 1", "count_odd")
    assert extract_code(text, "count_odd") == expected


@pytest.mark.parametrize("token", ["<|eot_id|>", "<|im_end|>", "<|endoftext|>", "</s>", "<|end|>", "<|EOT|>",
                                   "<end_of_turn>"])
def test_chat_template_end_tokens_end_the_answer(token):
    text = f"```python\ndef add(a, b):\n    return a + b\n```{token}\nuser: thanks"
    assert extract_code(text, "add") == "def add(a, b):\n    return a + b\n"
    assert extract_code(f"count_odd = lambda n: n % 2\n```{token}", "count_odd") == "count_odd = lambda n: n % 2\n"


def test_crlf_and_empty():
    assert extract_code("def f():\r\n    return 1\r\n") == "def f():\n    return 1\n"
    assert extract_code("") == "\n"


# Real recorded completions, several formats (ids chosen for their shape).
def _adaptive(sources_dir, key, task, trial):
    for line in open(sources_dir / FILES[key].relpath):
        row = json.loads(line)
        if row["id"] == task:
            return (row.get("responses") or row.get("response"))[trial]
    raise KeyError(task)


def _humaneval(sources_dir):
    with gzip.open(sources_dir / FILES["humaneval"].relpath, "rt") as fh:
        return {r["task_id"]: r for r in map(json.loads, fh)}


@pytest.mark.parametrize("key", ["adaptivellm-gpt4o", "adaptivellm-gpt3.5", "adaptivellm-codellama-7b-instruct-hf",
                                 "adaptivellm-starcoder2-15b-instruct-v0.1",
                                 "adaptivellm-qwen2.5-coder-1.5b-instruct"])
def test_real_humaneval_completions_extract_to_runnable_code(sources_dir, key):
    problems = _humaneval(sources_dir)
    ok = total = 0
    for line in open(sources_dir / FILES[key].relpath):
        row = json.loads(line)
        p = problems[row["id"]]
        for text in row.get("responses") or row.get("response"):
            code = extract_code(text, p["entry_point"], p["prompt"])
            total += 1
            ok += parses(code) and defines(code, p["entry_point"]) and "```" not in code
    assert total == 820 and ok / total >= 0.99


def test_real_fenced_prose_completion(sources_dir):
    # GPT-4o adds an explanation paragraph after the fenced code.
    text = _adaptive(sources_dir, "adaptivellm-gpt4o", "HumanEval/0", 1)
    assert "This implementation" in text
    code = extract_code(text, "has_close_elements")
    assert "This implementation" not in code and parses(code) and code.startswith("from typing import List")


def test_real_prose_first_completion(sources_dir):
    # StarCoder2 opens with a sentence, then a fence, then more prose.
    text = _adaptive(sources_dir, "adaptivellm-starcoder2-15b-instruct-v0.1", "HumanEval/0", 2)
    assert text.startswith("To check")
    code = extract_code(text, "has_close_elements")
    assert code.startswith("from typing import List") and parses(code)


def test_real_mbpp_completions(sources_dir):
    rows = {json.loads(line)["task_id"]: json.loads(line)
            for line in open(sources_dir / FILES["complexitynet-gpt"].relpath)}
    # A leading newline and no fences: the code is kept as is.
    code = extract_code(rows[2]["method2_gpt4_output"], "similar_elements")
    assert code == rows[2]["method2_gpt4_output"].strip("\n") + "\n"
    # GPT-4 named the function differently and added a commented usage example: kept verbatim.
    code = extract_code(rows[126]["method2_gpt4_output"], "sum")
    assert parses(code) and "def sum_common_divisors" in code
