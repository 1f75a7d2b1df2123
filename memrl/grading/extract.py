"""Find the final answer in a completion: the last `\\boxed{...}` or the text after the last `####`."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

# `(?![A-Za-z])` keeps longer macro names such as `\fboxsep` out.
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


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


_FORMATS: dict[str, Callable[[str], str | None]] = {"boxed": last_boxed, "hash": after_hash}


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


def extract_answer(text: str, formats: Sequence[str] = ("boxed", "hash")) -> str | None:
    """The final answer of `text`: the formats are tried in order and the first one found wins.

    Args:
        text: a model completion.
        formats: names among "boxed" (`last_boxed`) and "hash" (`after_hash`), or str-Enum members
            with those values; a single name is accepted too.

    Raises:
        ValueError: a format name is unknown (checked before any extraction).
    """
    names = _format_names(formats)
    if not isinstance(text, str):
        return None
    for name in names:
        found = _FORMATS[name](text)
        if found is not None:
            return found
    return None
