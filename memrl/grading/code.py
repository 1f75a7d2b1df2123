"""Code grading: find the program in a completion, build the benchmark's tests, run both in the sandbox.

Two benchmark layouts are understood, recognised from a problem's metadata:

- HumanEval (`prompt`, `test`, `entry_point`): the program is the prompt (its imports and helper
  functions) followed by the model's code, or the prompt continued by the completion when the model
  wrote only the body; the test is the benchmark's `check` called on the entry point.
- MBPP (`test_list`, optional `test_setup_code`): the program, then the setup code; each assert of
  `test_list` is its own step, so the first failing one is reported.

A completion passes only when the trusted replay of the tests, against the values its functions under
test returned in the sandbox, passes (see `memrl.sandbox`): the prompt (HumanEval) or the reference
solution (MBPP) is the replay's trusted prelude, so the tests' helpers and setup classes come from the
benchmark, never from the completion.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from memrl.errors import UserError
from memrl.sandbox.pool import SandboxPool
from memrl.sandbox.runner import Job, Verdict

# ```python ... ``` (also py, python3, or no language); an unclosed fence runs to the end
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_LANGS = {"", "python", "py", "python3", "py3"}
_CODE_START = re.compile(r"^(?:def |class |import |from |@|async def |if __name__)", re.MULTILINE)
# The instruction appended to a code question (chat models answer in a fenced block).
CODE_INSTRUCTION = "Write the complete Python program in a ```python code block."


@dataclass(frozen=True)
class CodeTask:
    """The benchmark side of a code problem.

    Attributes:
        kind: "humaneval" or "mbpp".
        prompt: HumanEval's prompt (placed before the program); "" for MBPP.
        entry_point: the function HumanEval's `check` receives; None for MBPP.
        tests: (name, source) steps, run after the program (MBPP's setup code is the first).
        expose: the functions under test: the only names of the program that the tests see even when
            they shadow a builtin (MBPP has a function called `sum`); their calls are recorded.
        prelude: trusted benchmark code the replay runs before the tests (the prompt, or MBPP's
            reference solution).
    """

    kind: str
    prompt: str
    entry_point: str | None
    tests: tuple[tuple[str, str], ...]
    expose: tuple[str, ...] = ()
    prelude: str = ""


def code_task(metadata: dict[str, Any]) -> CodeTask:
    """The tests of a code problem from its metadata (HumanEval or MBPP fields).

    Raises:
        UserError: the metadata holds neither layout.
    """
    if metadata.get("test") and metadata.get("entry_point"):
        entry = str(metadata["entry_point"])
        test = str(metadata["test"]) + f"\n\ncheck({entry})\n"
        prompt = str(metadata.get("prompt", ""))
        return CodeTask("humaneval", prompt, entry, (("check", test),), (entry,), prompt)
    tests = metadata.get("test_list")
    if isinstance(tests, (list, tuple)) and tests:
        steps = tuple((f"test {i + 1}", str(t)) for i, t in enumerate(tests))
        # the setup code builds test inputs from the program's classes: it runs after the program
        setup = str(metadata.get("test_setup_code") or "")
        if setup.strip():
            steps = (("test setup", setup), *steps)
        # the reference solution's top-level functions are the ones under test
        reference = str(metadata.get("code") or "")
        return CodeTask("mbpp", "", None, steps, _under_test(reference, tests), reference)
    raise UserError(
        "a code problem needs HumanEval fields (test, entry_point, prompt) or MBPP fields (test_list) in its "
        f"metadata; it has: {', '.join(sorted(metadata)) or '(none)'}"
    )


def _under_test(reference: str, tests: Sequence[Any]) -> tuple[str, ...]:
    """MBPP's functions under test: the reference's top-level functions, and any other name the asserts
    use that the reference defines (a lambda, a class): the replay must never run the reference's
    version of what the program should provide. (Classes its setup code builds stay the reference's.)"""
    try:
        body = ast.parse(reference).body
    except SyntaxError:
        return tuple(dict.fromkeys(re.findall(r"^def\s+(\w+)", reference, re.M)))
    defs = [n.name for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    others = {n.name for n in body if isinstance(n, ast.ClassDef)}
    others |= {t.id for n in body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    used = set()
    for test in tests:
        try:
            used |= {n.id for n in ast.walk(ast.parse(str(test))) if isinstance(n, ast.Name)}
        except SyntaxError:
            continue
    return tuple(dict.fromkeys([*defs, *sorted(others & used)]))


def code_question(question: str, metadata: dict[str, Any]) -> str:
    """The user message for a code problem: HumanEval's prompt, or MBPP's task with its tests shown."""
    if metadata.get("entry_point") and metadata.get("prompt"):
        return f"Complete the following Python function:\n```python\n{metadata['prompt']}```\n{CODE_INSTRUCTION}"
    tests = metadata.get("test_list")
    if isinstance(tests, (list, tuple)) and tests:
        shown = "\n".join(str(t) for t in tests)
        return f"{question}\nYour code should pass these tests:\n{shown}\n{CODE_INSTRUCTION}"
    return f"{question}\n{CODE_INSTRUCTION}"


def extract_program(response: str, entry_point: str | None = None) -> str | None:
    """The program in a completion: after the last `####` if any, then a fenced block, else the bare code.

    Among several fenced Python blocks the last one that defines `entry_point` wins (else the last
    one that defines anything, else the last block): models often follow the solution with an
    example. Returns None when nothing that looks like code is there.
    """
    if not isinstance(response, str):
        return None
    text = response
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    blocks = [body for lang, body in _FENCE.findall(text) if lang.lower() in _CODE_LANGS and body.strip()]
    if blocks:
        if entry_point:
            defining = [
                b for b in blocks if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", b, re.M)
            ]
            if defining:
                return defining[-1]
        defining = [b for b in blocks if _CODE_START.search(b)]
        return (defining or blocks)[-1]
    if not text.strip():
        return None
    return text


def _defines(program: str, entry_point: str) -> bool:
    return re.search(rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", program, re.M) is not None


def build_job(response: str, task: CodeTask) -> tuple[Job | None, str | None]:
    """(job, program) for one completion; (None, None) when no program was found."""
    program = extract_program(response, task.entry_point)
    if program is None:
        return None, None
    if task.kind == "humaneval":
        if _defines(program, task.entry_point or ""):
            # the prompt first: its imports and helpers (tests may call them); the model's def replaces the stub
            source = task.prompt + "\n" + program
        else:
            # a completion of the prompt: the body of the function
            source = task.prompt + program
    else:
        source = program
    return Job(source, task.tests, task.expose, task.prelude), program


class CodeGrader:
    """Grades code completions in the sandbox pool; the `code` domain of `memrl.grading.Grader`.

    Args:
        pool: the sandbox pool (its limits, workers and isolation).
    """

    def __init__(self, pool: SandboxPool) -> None:
        self.pool = pool

    def grade(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str | None, Verdict | None]]:
        """Grade (response, metadata) pairs; (program, verdict) each, (None, None) when no program was found.

        Raises:
            UserError: a problem without tests in its metadata.
        """
        built = [build_job(response, code_task(metadata or {})) for response, metadata in items]
        jobs = [job for job, _ in built if job is not None]
        verdicts = iter(self.pool.run(jobs))
        return [(program, next(verdicts)) if job is not None else (None, None) for job, program in built]
