"""Code grading: program extraction, the HumanEval and MBPP harnesses, and the Grader's code domain."""

from __future__ import annotations

import pytest

from memrl.data.loaders import load_problems
from memrl.data.problem import Problem
from memrl.data.templates import format_prompt
from memrl.errors import UserError
from memrl.grading import GradeItem, Grader
from memrl.grading.code import build_job, code_task, extract_program
from memrl.sandbox import Limits, SandboxPool
from memrl.sandbox.pool import usable_python

# a wall-clock limit far above the CPU limit: verdicts do not depend on the machine's load
FAST = Limits(timeout_s=120.0, cpu_s=10, memory_mb=512)


@pytest.fixture(scope="module", params=["bwrap", "rlimits"])
def pool(request):
    python = usable_python(request.param)
    if python is None:
        pytest.skip(f"the {request.param} sandbox does not run here")
    return SandboxPool(FAST, workers=2, isolation=request.param, python=python)


@pytest.fixture(scope="module")
def humaneval():
    return load_problems({"name": "humaneval", "source": "bundled", "split": "test", "domain": "code"})


@pytest.fixture(scope="module")
def mbpp():
    return load_problems({"name": "mbpp", "source": "bundled", "split": "test", "domain": "code"})


def test_extract_prefers_the_fenced_block_that_defines_the_entry_point():
    text = "Here:\n```python\ndef f(x):\n    return x\n```\nUsage:\n```python\nprint(f(1))\n```\n"
    assert extract_program(text, "f") == "def f(x):\n    return x\n"
    assert extract_program(text) == "def f(x):\n    return x\n"
    assert extract_program("```py\nimport math\n```") == "import math\n"


def test_extract_hash_convention_unclosed_fence_and_bare_code():
    assert extract_program("thinking... #### def g():\n    return 2\n") == " def g():\n    return 2\n"
    assert extract_program("#### ```python\ndef g():\n    return 2\n```") == "def g():\n    return 2\n"
    assert extract_program("```python\ndef g():\n    return 2") == "def g():\n    return 2"
    assert extract_program("def g():\n    return 2\n") == "def g():\n    return 2\n"
    assert extract_program("   ") is None and extract_program(None) is None  # type: ignore[arg-type]
    # a fence in another language is not the program
    assert extract_program("```bash\nrm -rf /\n```\n") == "```bash\nrm -rf /\n```\n"


def test_code_task_reads_both_layouts_and_rejects_others(humaneval, mbpp):
    he = code_task(humaneval[0].metadata)
    assert he.kind == "humaneval" and he.entry_point == "has_close_elements" and he.expose == ("has_close_elements",)
    assert he.tests[0][1].rstrip().endswith("check(has_close_elements)")
    mb = code_task(next(p for p in mbpp if p.id == "mbpp-367").metadata)
    assert [name for name, _ in mb.tests] == ["test setup", "test 1", "test 2", "test 3"]
    assert mb.expose == ("get_height", "is_tree_balanced")
    # a function under test the reference defines without `def` is the program's too, never the reference's
    assert code_task({"test_list": ["assert f(1) == 1"], "code": "f = lambda x: x\ng = 1\n"}).expose == ("f",)
    with pytest.raises(UserError, match="MBPP fields"):
        code_task({"question": "x"})


def test_canonical_solutions_pass_and_broken_ones_fail(pool, humaneval, mbpp):
    # the first 12, and those whose tests draw random numbers (HumanEval/32, 38, 50, 53)
    he = humaneval[:12] + [
        p for p in humaneval if p.id in ("HumanEval/32", "HumanEval/38", "HumanEval/50", "HumanEval/53")
    ]
    jobs = [build_job(p.metadata["canonical_solution"], code_task(p.metadata))[0] for p in he]
    # the same solutions with the first return value perturbed
    wrong = [
        build_job(p.metadata["canonical_solution"].replace("return ", "return not ", 1), code_task(p.metadata))[0]
        for p in he
    ]
    # a function named sum; setup code building the program's classes; Counter results
    mb = mbpp[:12] + [p for p in mbpp if p.id in ("mbpp-126", "mbpp-367", "mbpp-40", "mbpp-88")]
    jobs += [build_job(p.metadata["code"], code_task(p.metadata))[0] for p in mb]
    verdicts = pool.run(jobs + wrong)
    assert [v.status for v in verdicts[: len(jobs)]] == ["passed"] * len(jobs)
    assert all(v.status in ("failed", "error") for v in verdicts[len(jobs) :])


def test_full_function_answers_keep_the_prompts_helpers(pool, humaneval):
    # HumanEval/38's check calls encode_cyclic, defined in the prompt only
    p = next(p for p in humaneval if p.id == "HumanEval/38")
    answer = "```python\ndef decode_cyclic(s: str):\n    return encode_cyclic(encode_cyclic(s))\n```"
    job, program = build_job(answer, code_task(p.metadata))
    assert program.startswith("def decode_cyclic") and job.program.startswith(p.metadata["prompt"])
    assert pool.run([job])[0].status == "passed"


def test_grader_code_domain(pool, humaneval, mbpp):
    p = humaneval[2]  # truncate_number
    q = mbpp[0]
    items = [
        GradeItem(
            "code",
            "```python\ndef truncate_number(number: float) -> float:\n    return number % 1.0\n```",
            None,
            p.metadata,
        ),
        GradeItem("code", "    return number\n", None, p.metadata),
        GradeItem("code", "", None, p.metadata),
        GradeItem("code", f"```python\n{q.metadata['code']}\n```", None, q.metadata),
        GradeItem("math", "\\boxed{4}", "4"),
    ]
    with Grader(num_workers=0, sandbox=pool) as g:
        r = g.grade_batch(items)
    assert [(x.correct, x.status) for x in r] == [
        (True, "passed"),
        (False, "failed"),
        (False, "no_answer"),
        (True, "passed"),
        (True, "ok"),
    ]
    assert r[1].detail.startswith("check: assert") and r[0].extracted.startswith("def truncate_number")


def test_code_prompts_show_what_the_model_needs(humaneval, mbpp):
    he = format_prompt(humaneval[0])
    assert "```python\nfrom typing import List" in he and "```python code block" in he
    mb = format_prompt(mbpp[0])
    assert mb.startswith(mbpp[0].question) and 'assert remove_Occ("hello","l") == "heo"' in mb
    plain = format_prompt(Problem(id="1", question="Compute 2 + 3.", answer="5"))
    assert plain == "Compute 2 + 3.\nPut the final answer in \\boxed{}.\n"
