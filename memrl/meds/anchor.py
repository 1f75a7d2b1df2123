"""The anchor of the MEDS feature: the token after which a response states its final answer.

The released code searches each response backwards for the token sequence of `tokenizer.encode("\\boxed{")`
and, failing that, for the last token containing "boxed" followed within 10 tokens by one containing "{"
(docs/methods.md#layer-wise-logit-feature). Both searches look for the token that holds the anchor's last character. We search on
characters instead of token ids, which finds that same token for every tokenization (a `{` merged with the
answer's first digit, a leading space merged into `\\boxed`, a pattern split differently in context), and
takes configurable patterns, so that `####` answers work too.

The feature is read at the anchor token (its hidden state predicts the next token), and the target is the
next token, the first token of the answer. A response whose anchor is its last token has no target, so no
anchor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_PATTERNS = ("\\boxed{",)


def find_anchor(token_ids: Sequence[int], piece: Callable[[int], str], patterns: Sequence[str]) -> int:
    """Index of the token holding the last character of the last anchor-pattern occurrence, or -1.

    Scans backwards and stops at the first (i.e. latest) occurrence, so the cost is the distance from the
    end of the response, not its length.

    Args:
        token_ids: the response's token ids (no padding).
        piece: token id -> the text that token contributes when decoded.
        patterns: anchor strings; the occurrence starting last wins.

    Returns:
        The anchor index `i`, with `i + 1 < len(token_ids)` (a target token follows), or -1.
    """
    if not patterns:
        return -1
    longest = max(len(p) for p in patterns)
    suffix = ""
    lengths: list[int] = []  # lengths[j]: characters of token (start + j) in `suffix`
    for start in range(len(token_ids) - 1, -1, -1):
        text = piece(int(token_ids[start]))
        suffix = text + suffix
        lengths.insert(0, len(text))
        # a new occurrence starts inside this token's text (later ones were found before): look only there
        window = suffix[: len(text) + longest - 1]
        ends = [window.rfind(p) + len(p) - 1 for p in patterns if p and window.rfind(p) >= 0]
        if not ends:
            continue
        end = max(ends)
        offset = 0
        for j, n in enumerate(lengths):
            if offset + n > end:
                anchor = start + j
                return anchor if anchor + 1 < len(token_ids) else -1
            offset += n
        return -1
    return -1


class AnchorFinder:
    """`find_anchor` with a tokenizer: decodes each token id once (cached), then searches.

    Args:
        tokenizer: a Hugging Face tokenizer.
        patterns: anchor strings (default: `\\boxed{`).
    """

    def __init__(self, tokenizer: Any, patterns: Sequence[str] = DEFAULT_PATTERNS) -> None:
        self.tokenizer = tokenizer
        self.patterns = tuple(p for p in patterns if p)
        if not self.patterns:
            raise ValueError("MEDS needs at least one non-empty anchor pattern")
        self._pieces: dict[int, str] = {}

    def piece(self, token_id: int) -> str:
        text = self._pieces.get(token_id)
        if text is None:
            text = self._pieces[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return text

    def __call__(self, token_ids: Sequence[int], text: str | None = None) -> int:
        """The anchor index of one response (-1: none). `text`, when given, skips responses without a pattern."""
        if text is not None and not any(p in text for p in self.patterns):
            return -1
        return find_anchor(token_ids, self.piece, self.patterns)
