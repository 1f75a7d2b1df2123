"""Prompt templates: plain for the tiny model and base models, the chat template for instruct models."""

from __future__ import annotations

import pytest

from memrl.data.problem import Problem
from memrl.data.templates import format_prompt, resolve_style
from memrl.errors import UserError

P = Problem(id="1", question="Compute 2 + 3.", answer="5")


class ChatTok:
    """The part of a tokenizer that templates use, with a Qwen-like chat template."""

    chat_template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        from jinja2 import Template

        text = Template(self.chat_template).render(messages=messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def test_plain_prompts():
    assert format_prompt(P) == "Compute 2 + 3.\nPut the final answer in \\boxed{}.\n"
    assert format_prompt(P, answer_format="hash") == "Compute 2 + 3.\nEnd with #### followed by the final answer.\n"


def test_chat_prompt_uses_the_template_and_system_prompt():
    text = format_prompt(P, ChatTok(), style="chat", system_prompt="Reason step by step.")
    assert text == (
        "<|im_start|>system\nReason step by step.<|im_end|>\n"
        "<|im_start|>user\nCompute 2 + 3.\nPut the final answer in \\boxed{}.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_auto_style():
    assert resolve_style("auto", ChatTok()) == "chat"
    assert resolve_style("auto", object()) == "plain"


def test_chat_without_template_is_a_user_error():
    with pytest.raises(UserError, match="prompt_style=plain"):
        format_prompt(P, object(), style="chat")
