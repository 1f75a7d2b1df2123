"""The thinking / answer split rules, in their documented order."""

from memrl.rollout.split import split_thinking_answer


def test_think_tags_win():
    assert split_thinking_answer("<think>2+2 is 4</think> The answer is \\boxed{4}") == (
        "2+2 is 4",
        "The answer is \\boxed{4}",
        "think_tags",
    )


def test_code_fence():
    t, a, rule = split_thinking_answer("I will loop.\n```python\ndef f():\n    return 1\n```")
    assert (t, rule) == ("I will loop.", "code_fence")
    assert a.startswith("```python")


def test_hash():
    assert split_thinking_answer("3 + 4 = 7.\n#### 7") == ("3 + 4 = 7.", "#### 7", "hash")


def test_last_boxed():
    text = "37 + 48 = 85. 85 - 19 = 66. \\boxed{66}"
    assert split_thinking_answer(text) == ("37 + 48 = 85. 85 - 19 = 66.", "\\boxed{66}", "boxed")


def test_fallback_splits_at_whitespace_near_middle():
    t, a, rule = split_thinking_answer("aaa bbb ccc ddd")
    assert rule == "half"
    assert (t, a) == ("aaa bbb", "ccc ddd")
    assert split_thinking_answer("") == ("", "", "half")
