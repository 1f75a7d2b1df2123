"""Prompt templates: a question becomes the text the policy continues.

`plain` is for base models and the tiny default model (which was trained on exactly this layout);
`chat` applies the tokenizer's chat template (instruct models). The instruction line asks for the
configured answer format, so that grading can find the final answer.
"""

from __future__ import annotations

from typing import Any

from memrl.data.problem import Problem
from memrl.errors import UserError

INSTRUCTIONS = {
    "boxed": "Put the final answer in \\boxed{}.",
    "hash": "End with #### followed by the final answer.",
}
# The instruction appended to a code question (chat models answer in a fenced block, which
# `memrl.grading.code.extract_program` reads).
CODE_INSTRUCTION = "Write the complete Python program in a ```python code block."


def _value(x: Any) -> str:
    return getattr(x, "value", x)


def instruction(answer_format: Any) -> str:
    """The instruction line for an answer format ("boxed" or "hash")."""
    return INSTRUCTIONS[_value(answer_format)]


def code_question(question: str, metadata: dict[str, Any]) -> str:
    """The user message for a code problem: HumanEval's prompt, or MBPP's task with its tests shown."""
    if metadata.get("entry_point") and metadata.get("prompt"):
        return f"Complete the following Python function:\n```python\n{metadata['prompt']}```\n{CODE_INSTRUCTION}"
    tests = metadata.get("test_list")
    if isinstance(tests, (list, tuple)) and tests:
        shown = "\n".join(str(t) for t in tests)
        return f"{question}\nYour code should pass these tests:\n{shown}\n{CODE_INSTRUCTION}"
    return f"{question}\n{CODE_INSTRUCTION}"


def user_message(problem: Problem, answer_format: Any = "boxed") -> str:
    """The question followed by the answer-format instruction (code: the task, its tests shown for MBPP)."""
    if problem.domain == "code":
        return code_question(problem.question, problem.metadata)
    return f"{problem.question}\n{instruction(answer_format)}"


def resolve_style(style: Any, tokenizer: Any) -> str:
    """`auto` -> `chat` when the tokenizer has a chat template, else `plain`."""
    style = _value(style)
    if style == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    return style


def format_prompt(
    problem: Problem,
    tokenizer: Any = None,
    style: Any = "plain",
    answer_format: Any = "boxed",
    system_prompt: str | None = None,
) -> str:
    """Build the prompt text for one problem.

    Args:
        problem: the query.
        tokenizer: needed for `chat` and `auto` styles (its chat template).
        style: "plain", "chat" or "auto".
        answer_format: "boxed" or "hash".
        system_prompt: optional system message for chat prompts.

    Returns:
        The prompt string; the completion follows it directly.
    """
    style = resolve_style(style, tokenizer)
    message = user_message(problem, answer_format)
    if style == "plain":
        return message + "\n"
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise UserError("model.prompt_style=chat needs a tokenizer with a chat template; use model.prompt_style=plain")
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": message})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
