"""Find the final answer in a completion: the boxes of its last statement, or the text after the last `####`."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

# `(?![A-Za-z])` keeps longer macro names such as `\fboxsep` out.
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# A blank line ends a paragraph.
_PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t]*\n")
# Text between two boxes that still joins them into one statement, even across blank lines
# (display math: "\\[\\boxed{1}\\]\n\nand\n\n\\[\\boxed{-2}\\]"): delimiters, punctuation, "and", "or".
_JOINER_RE = re.compile(r"(?:\s|[$,;:.]|\\[\[\]()]|\\q?quad|\\text\{\s*(?:and|or)\s*\}|\band\b|\bor\b)*", re.IGNORECASE)


def _braced_content(text: str, start: int) -> str | None:
    """The content of the brace group opening at `text[start] == "{"`, or None if it never closes.

    A backslash escapes the next character, so `\\{` and `\\}` do not count as braces.
    """
    depth = 0
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` or `\\fbox{...}` in `text`, stripped.

    Nested braces are balanced (`\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`). The brace-less form
    `\\boxed 5` gives the token after the macro, up to whitespace or `$`. Returns None when there is
    no box, when the last box never closes, or when it is empty.
    """
    if not isinstance(text, str):
        return None
    last = None
    for last in _BOX_RE.finditer(text):  # noqa: B007  (keeps the last match)
        pass
    if last is None:
        return None
    i = last.end()
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i < n and text[i] == "{":
        content = _braced_content(text, i)
    else:
        # `\boxed 5`: models write the whole number, not only LaTeX's single token
        j = i
        while j < n and not text[j].isspace() and text[j] != "$":
            j += 1
        content = text[i:j]
    if content is None:
        return None
    content = content.strip()
    return content or None


def _box_at(text: str, start: int) -> tuple[str | None, int]:
    """(content, end) of the box whose argument starts at `text[start]` (after the macro name).

    The content is None when the braces never close (then `end` is the end of `text`).
    """
    i = start
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i < n and text[i] == "{":
        content = _braced_content(text, i)
        return content, n if content is None else i + len(content) + 2
    j = i
    while j < n and not text[j].isspace() and text[j] != "$":
        j += 1
    return text[i:j], j


def final_boxes(text: str) -> list[str] | None:
    """The answers boxed in the last statement of `text`, in order, stripped and without repeats.

    The last statement is the last box and the boxes before it up to a paragraph break (a blank
    line) that is more than a joining word ("and", "or"), punctuation or math delimiters: "so
    \\boxed{1} and \\boxed{-2}" gives ["1", "-2"]; a completion that boxes an answer, then revises
    it in a later paragraph, gives only the final box. Boxes inside a box and empty boxes are
    skipped. Returns None when the last box is missing, never closes, or is empty (as `last_boxed`).
    """
    if not isinstance(text, str):
        return None
    spans: list[tuple[int, int, str | None]] = []  # (start, end, content) of the outermost boxes
    pos = 0
    while (m := _BOX_RE.search(text, pos)) is not None:
        content, end = _box_at(text, m.end())
        spans.append((m.start(), end, content))
        pos = max(end, m.end())
    if not spans or not (spans[-1][2] or "").strip():
        return None
    group = [spans[-1]]
    for span in reversed(spans[:-1]):
        between = text[span[1] : group[-1][0]]
        if span[2] is None or (_PARAGRAPH_BREAK_RE.search(between) and not _JOINER_RE.fullmatch(between)):
            break
        group.append(span)
    answers: list[str] = []
    seen = set()
    for _, _, content in reversed(group):
        answer = (content or "").strip()
        # `\boxed{\boxed{5}}`: the inner box is the answer
        answer = (last_boxed(answer) or answer) if _BOX_RE.match(answer) else answer
        key = "".join(answer.split())
        if answer and key not in seen:
            seen.add(key)
            answers.append(answer)
    return answers


def after_hash(text: str) -> str | None:
    """The text after the last `####` up to the end of its line, stripped (GSM8K's answer format).

    Returns None when there is no `####` or nothing follows it on that line.
    """
    if not isinstance(text, str):
        return None
    i = text.rfind("####")
    if i < 0:
        return None
    line = text[i + 4 :].split("\n", 1)[0].strip()
    return line or None


def _hash_answers(text: str) -> list[str] | None:
    found = after_hash(text)
    return None if found is None else [found]


_FORMATS: dict[str, Callable[[str], list[str] | None]] = {"boxed": final_boxes, "hash": _hash_answers}


def _format_names(formats: Sequence[str] | str) -> list[str]:
    """Format names from strings or str-Enum members; ValueError naming the valid ones otherwise."""
    if isinstance(formats, str) or hasattr(formats, "value"):
        formats = [formats]
    names = []
    for f in formats:
        name = getattr(f, "value", f)
        if name not in _FORMATS:
            raise ValueError(f"unknown answer format {name!r}: expected one of {', '.join(sorted(_FORMATS))}")
        names.append(name)
    return names


def extract_answers(text: str, formats: Sequence[str] = ("boxed", "hash")) -> list[str] | None:
    """The final answers of `text`: the formats are tried in order and the first one found wins.

    Args:
        text: a model completion.
        formats: names among "boxed" (`final_boxes`: every box of the last statement) and "hash"
            (`after_hash`: one answer), or str-Enum members with those values; a single name is
            accepted too.

    Raises:
        ValueError: a format name is unknown (checked before any extraction).
    """
    names = _format_names(formats)
    if not isinstance(text, str):
        return None
    for name in names:
        found = _FORMATS[name](text)
        if found:
            return found
    return None


def extract_answer(text: str, formats: Sequence[str] = ("boxed", "hash")) -> str | None:
    """The final answer of `text` as one string: `extract_answers` joined by ", " ("1, -2")."""
    found = extract_answers(text, formats)
    return None if found is None else ", ".join(found)
