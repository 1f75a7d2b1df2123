"""The anchor search: the token holding the last character of the last pattern, on tricky tokenizations."""

from __future__ import annotations

import pytest

from memrl.meds.anchor import AnchorFinder, find_anchor


def _find(pieces, patterns=("\\boxed{",)):
    ids = list(range(len(pieces)))
    return find_anchor(ids, lambda i: pieces[i], patterns)


@pytest.mark.parametrize(
    "pieces, want",
    [
        # the pattern as one token, the answer next
        (["So ", "\\boxed{", "42", "}"], 1),
        # split differently in context: "\box" + "ed{"
        (["x", " \\box", "ed{", "7", "}"], 2),
        # the brace merged with the answer's first digit: the anchor is the token holding "{"
        (["\\", "boxed", "{4", "2}"], 2),
        # a leading space merged into the pattern's first token
        ([" \\boxed", "{", "1", "}"], 1),
        # the last occurrence wins
        (["\\boxed{", "1", "}", " no, ", "\\boxed{", "2", "}"], 4),
        # one character per token
        (list("ab\\boxed{9}"), 8),
    ],
)
def test_anchor_is_the_token_holding_the_patterns_last_character(pieces, want):
    assert _find(pieces) == want


@pytest.mark.parametrize(
    "pieces",
    [
        ["The answer is 42."],  # no pattern
        ["\\boxed", " {", "4", "}"],  # a space breaks the pattern
        ["so ", "\\boxed{"],  # the anchor is the last token: no target follows
    ],
)
def test_no_anchor(pieces):
    assert _find(pieces) == -1


def test_several_patterns_take_the_latest_occurrence():
    pieces = ["\\boxed{", "3", "}", " #### ", "5"]
    assert _find(pieces, ("\\boxed{", "####")) == 3
    assert _find(pieces, ("\\boxed{",)) == 0
    assert _find(["#### ", "5"], ("####",)) == 0


def test_finder_on_the_tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    finder = AnchorFinder(tok)
    text = "Careful: 37 + 8 = 45. 45 - 5 = 40. \\boxed{40}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pos = finder(ids, text)
    assert pos >= 0
    # the anchor's text ends the pattern; the next token starts the answer
    assert tok.decode(ids[: pos + 1]).endswith("\\boxed{")
    assert tok.decode(ids[pos + 1 :]).startswith("4")
    assert finder(ids, "no pattern in the text") == -1  # the text pre-check skips the search
    with pytest.raises(ValueError):
        AnchorFinder(tok, ("",))
