"""Is a predicted math answer equal to the gold one? Exact numbers first, math-verify for the rest."""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import time
from collections.abc import Iterator
from fractions import Fraction

# Longer strings are not "plain numbers" a human writes; it also keeps Fraction far from huge ints.
_MAX_NUMBER_LEN = 200

# `\text{ cm}` and friends: unwrapped, then a trailing unit word is dropped like "18 dollars".
_TEXT_RE = re.compile(r"\\(?:text|textrm|textbf|textit|mbox|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°")
# A thin space between digit groups is a thousands separator: `1\,000`.
_THIN_THOUSANDS_RE = re.compile(r"(?<=\d)\\,(?=\d{3}(?!\d))")
_SPACING_RE = re.compile(r"\\[,;:> ]|~")
_CURRENCY_RE = re.compile(r"\\\$|\$|€|£|¥|₹|\\euro|\\pounds")
_PERCENT_RE = re.compile(r"\\%|%")
# A decimal with optional thousands groups of exactly three digits ("1,2" is a list, not a number).
_PLAIN_RE = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+)?(?:\.(\d*))?")
_FRAC_ARG = r"(?:\{([^{}]*)\}|(\d))"
_LATEX_FRAC_RE = re.compile(r"\\[dt]?frac\s*" + _FRAC_ARG + r"\s*" + _FRAC_ARG)
_SLASH_RE = re.compile(r"([^/]+)/([^/]+)")
_UNIT_TOKEN = r"[A-Za-z]+(?:\^\{?[23]\}?|/[A-Za-z]+)*\.?"
_UNITS_RE = re.compile(r"\s+(" + _UNIT_TOKEN + r"(?:\s+" + _UNIT_TOKEN + r")*)$")
# Words that are mathematics, not units: "2 pi" is not 2.
_NOT_UNITS = frozenset(
    ["pi", "sqrt", "ln", "log", "sin", "cos", "tan", "cot", "sec", "csc", "exp", "inf", "infty", "infinity"]
    + ["and", "or", "to", "times", "cdot", "div", "over", "plus", "minus", "mod", "choose", "i", "e"]
)
_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# "x = 70,000": a variable (a letter, optionally subscripted) assigned the answer.
_ASSIGNMENT_RE = re.compile(r"([A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?)\s*=\s*(?=\S)")


def _strip_delimiters(s: str) -> str:
    """`s` without surrounding `$...$`, `$$...$$`, `\\(...\\)` or `\\[...\\]` (repeatedly)."""
    changed = True
    while changed:
        changed = False
        for left, right in _DELIMITERS:
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)].strip()
                changed = True
                break
    return s


def _assignment(s: str) -> tuple[str | None, str]:
    """(variable, value) of "x = 5" (variable None when `s` is not such an assignment), delimiters removed.

    Only one variable and one "=": "x = y = 5" and "2 + 3 = 5" are not assignments.
    """
    t = _strip_delimiters(s.strip())
    m = _ASSIGNMENT_RE.match(t)
    if m is None or "=" in t[m.end() :]:
        return None, t
    return m.group(1), t[m.end() :]


def _plain(s: str) -> Fraction | None:
    """An unsigned decimal such as "007", "1,234.50" or ".5" as an exact Fraction, else None."""
    s = s.strip()
    m = _PLAIN_RE.fullmatch(s)
    if m is None or not (m.group(1) or m.group(2)):
        return None
    whole = (m.group(1) or "0").replace(",", "")
    return Fraction(f"{whole}.{m.group(2) or '0'}")


def _signed(s: str) -> Fraction | None:
    """`_plain` with an optional leading sign."""
    s = s.strip()
    sign = 1
    if s and s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    value = _plain(s)
    return None if value is None else sign * value


def _ratio(num: Fraction | None, den: Fraction | None) -> Fraction | None:
    """num / den, or None when either is missing or den is zero."""
    if num is None or den is None or den == 0:
        return None
    return num / den


def _core(s: str) -> Fraction | None:
    """An unsigned number: a decimal, `\\frac{a}{b}` (also `\\dfrac`, `\\tfrac`, `\\frac12`) or `a/b`."""
    value = _plain(s)
    if value is not None:
        return value
    m = _LATEX_FRAC_RE.fullmatch(s)
    if m is not None:
        num = m.group(1) if m.group(1) is not None else m.group(2)
        den = m.group(3) if m.group(3) is not None else m.group(4)
        return _ratio(_signed(num), _signed(den))
    m = _SLASH_RE.fullmatch(s)
    if m is not None:
        return _ratio(_plain(m.group(1)), _plain(m.group(2)))
    return None


def to_fraction(s: str) -> Fraction | None:
    """The exact value of `s` if it is a plain number as a careful human reads it, else None.

    Accepted: thousands commas in groups of three, leading zeros, a sign, decimals, currency signs,
    percent signs (the number before them: "50%" is 50), `\\text{...}`-style units and trailing unit
    words ("18 dollars"), degrees, `\\frac{a}{b}` and its `d`/`t` variants, `a/b`, LaTeX spacing
    (`10,\\!080`), math delimiters, a trailing period, and an assignment prefix ("x = 70,000").
    Not accepted (None): exponents, mixed numbers, ambiguous lists such as "1,2", tuples and
    intervals such as "(1,2)", symbols such as `\\pi`, anything longer than 200 characters.
    """
    if not isinstance(s, str):
        return None
    t = s.strip()
    if not t or len(t) > _MAX_NUMBER_LEN:
        return None
    t = _strip_delimiters(_assignment(t)[1])
    t = t.replace("\u2212", "-").replace("{,}", ",")
    t = _THIN_THOUSANDS_RE.sub("", t)
    t = t.replace("\\!", "")
    t = _SPACING_RE.sub(" ", t)
    t = _TEXT_RE.sub(lambda m: f" {m.group(1)} ", t)
    t = _DEGREE_RE.sub(" ", t)
    t = _CURRENCY_RE.sub(" ", t)
    t = _PERCENT_RE.sub(" ", t)
    t = t.strip()
    if t.endswith("."):
        t = t[:-1].rstrip()
    m = _UNITS_RE.search(t)
    if m is not None:
        words = re.findall(r"[A-Za-z]+", m.group(1))
        # single letters are variables far more often than units ("5 x")
        if all(len(w) > 1 and w.lower() not in _NOT_UNITS for w in words):
            t = t[: m.start()].rstrip()
    sign = 1
    if t and t[0] in "+-":
        sign = -1 if t[0] == "-" else 1
        t = t[1:].lstrip()
    if not t:
        return None
    value = _core(t)
    return None if value is None else sign * value


def _format(value: Fraction) -> str:
    """One string per value: integers "7", terminating decimals "2.5", others reduced "p/q"."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = abs(value.numerator) * 10**places // value.denominator
    whole, frac = divmod(scaled, 10**places)
    sign = "-" if value < 0 else ""
    return f"{sign}{whole}.{str(frac).zfill(places).rstrip('0')}"


def normalize_number(s: str) -> str | None:
    """The canonical string of `s` if it is a plain number (see `to_fraction`), else None.

    Each value has exactly one canonical string, so equal numbers give equal strings:
    "1,234" -> "1234", "007" -> "7", "-0" -> "0", "2.50" -> "2.5", "\\dfrac{1}{2}" -> "0.5",
    "\\frac{2}{6}" -> "1/3", "50\\%" -> "50", "5 \\text{ cm}" -> "5".
    """
    value = to_fraction(s)
    return None if value is None else _format(value)


def _squash(s: str) -> str:
    """`s` without any whitespace or math delimiters, for the string-level comparison."""
    return "".join(_strip_delimiters(s.strip()).split())


def fast_math_equal(pred: str, gold: str) -> bool | None:
    """The verdict when it is cheap to reach, else None (math-verify is needed).

    True when the strings agree up to whitespace; when both are plain numbers (see `to_fraction`),
    their exact comparison; False when either side is empty or not a string. Two assignments to
    different variables ("x = 5" against "y = 5") are left to math-verify.
    """
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    p, g = _squash(pred), _squash(gold)
    if not p or not g:
        return False
    if p == g:
        return True
    pv, gv = to_fraction(pred), to_fraction(gold)
    if pv is not None and gv is not None:
        p_var, g_var = _assignment(pred)[0], _assignment(gold)[0]
        if p_var is not None and g_var is not None and p_var != g_var:
            return None
        return pv == gv
    return None


_OPENERS = {"(": ")", "[": "]", "{": "}"}


def is_tuple(s: str) -> bool:
    """Whether `s` is one parenthesised tuple such as "(2, 3)" or "\\left( a, b \\right)".

    The parenthesis that opens `s` must close at its end, with a comma at the top level between:
    "(1, 2), (3, 4)" is a list of two tuples, "(1, 2]" an interval, "(5)" a number.
    """
    t = _strip_delimiters(s.strip()).replace("\\left", "").replace("\\right", "").strip()
    if len(t) < 2 or t[0] != "(" or t[-1] != ")":
        return False
    stack: list[str] = []
    comma = False
    for i, c in enumerate(t):
        if c in _OPENERS:
            stack.append(_OPENERS[c])
        elif c in ")]}":
            if not stack or stack.pop() != c:
                return False
            if not stack and i != len(t) - 1:
                return False
        elif c == "," and len(stack) == 1:
            comma = True
    return comma and not stack


def join_answers(answers: list[str], ordered: bool = False) -> str:
    """Several final answers as one string for comparison: "1, -2", which math-verify reads as the
    set {1, -2} (as it reads several boxes), or "(1, -2)" when `ordered`.

    Repeats are dropped, also of equal numbers ("\\frac12" and "0.5"); one answer is returned as is.
    """
    kept: list[str] = []
    seen = set()
    for a in answers:
        key = normalize_number(a) or _squash(a)
        if key not in seen:
            seen.add(key)
            kept.append(a.strip())
    if len(kept) == 1:
        return kept[0]
    joined = ", ".join(kept)
    return f"({joined})" if ordered else joined


def _wrap(s: str) -> str:
    """`s` as math-verify should read it: a plain number as its canonical string ("x = 70,000" as
    "x = 70000", which math-verify would read as x = {0, 70}); anything else in `$...$` unless it
    already carries delimiters, so that math-verify reads it as LaTeX."""
    value = to_fraction(s)
    if value is not None:
        variable = _assignment(s)[0]
        return f"${_format(value)}$" if variable is None else f"${variable} = {_format(value)}$"
    t = s.strip()
    if "$" in t or "\\(" in t or "\\[" in t or "\\boxed" in t:
        return t
    return f"${t}$"


class _NoTimeoutWarning(logging.Filter):
    """Drops math-verify's warning that its own timeout is off: `_time_limit` is the limit instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


_FILTER = _NoTimeoutWarning()


def _quiet_math_verify() -> None:
    """Install `_NoTimeoutWarning` on math-verify's loggers (once)."""
    for name in ("math_verify.parser", "math_verify.grader"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise math-verify's TimeoutException in the block once `seconds` have passed (main thread only).

    math-verify's own limit is `signal.alarm`, which takes whole seconds; a real-valued interval
    timer (`setitimer`) keeps the fraction. The signal is checked between Python bytecodes, so C
    code that never returns is not interrupted: the Grader's worker processes add a hard limit.
    Off the main thread no signal can be used and the block runs unlimited.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from math_verify.errors import TimeoutException  # heavy (sympy, ~1 s): only answers that need it pay

    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutException(f"over the time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    start = time.monotonic()
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        # nested, so that an alarm landing right here still restores the previous handler
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, previous)
            if outer > 0:  # someone else's timer (a test runner's, say) runs on with what it had left
                signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))


def _verify(pred: str, gold: str, timeout_s: float) -> tuple[bool, str]:
    """math-verify's verdict on (pred, gold) and "ok", or False and "timeout" when `timeout_s` ran out.

    One limit covers the whole judgement (both parses and every comparison), enforced by
    `_time_limit` in the main thread; elsewhere it runs unlimited and the caller must bound it
    (the Grader's worker processes run it in their main thread).
    """
    # heavy (sympy, ~1 s): only answers that need math-verify pay for it, and a worker before its first time limit
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    _quiet_math_verify()

    def parse_one(s: str) -> list:
        try:
            return parse(_wrap(s), parsing_timeout=None, raise_on_error=True)
        except Exception:  # noqa: BLE001 - unparseable LaTeX has no candidates (a timeout is no Exception)
            return []

    try:
        with _time_limit(timeout_s):
            gold_parsed = parse_one(gold)
            pred_parsed = parse_one(pred)
            # verify's own loop over candidate pairs, so that a timeout can be told from a "no"
            for g in gold_parsed:
                for p in pred_parsed:
                    try:
                        if verify(g, p, timeout_seconds=None, raise_on_error=True):
                            return True, "ok"
                    except Exception:  # noqa: BLE001, S112 - sympy fails on odd pairs: try the next one
                        continue
    except TimeoutException:
        return False, "timeout"
    return False, "ok"


def judge_math(pred: str, gold: str, timeout_s: float = 5.0) -> tuple[bool, str]:
    """(correct, status) for a predicted answer against the gold one; status is "ok" or "timeout".

    The cheap checks of `fast_math_equal` come first; math-verify decides the rest within
    `timeout_s` seconds (to the fraction) when called in the main thread. Garbage input gives
    (False, "ok").
    """
    try:
        fast = fast_math_equal(pred, gold)
        if fast is not None:
            return fast, "ok"
        return _verify(pred, gold, timeout_s)
    except Exception:  # noqa: BLE001 - the contract: garbage is "not equal", never an exception
        return False, "ok"


def math_equal(pred: str, gold: str, timeout_s: float = 5.0) -> bool:
    """Whether `pred` is mathematically equal to `gold`; never raises on garbage, returns False.

    Plain numbers compare exactly as Fractions ("0.5" == "\\frac{1}{2}", "1,234" != "1.234",
    "x = 70,000" == "70000"); strings equal up to whitespace are equal; everything else goes to
    math-verify with `gold` as the reference (its comparison is not symmetric: assignments such as
    "x=3" count for "3"). In the main thread math-verify is limited to `timeout_s` seconds; off the
    main thread it cannot be, and the caller must bound the time (see `memrl.grading.Grader`).
    """
    return judge_math(pred, gold, timeout_s)[0]
