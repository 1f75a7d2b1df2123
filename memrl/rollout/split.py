"""Split a completion into its thinking process and its answer (MemReward's node types).

The same rule runs offline (warm-up memory) and online (training), in this order:
1. `<think>...</think>`: thinking = inside the tags, answer = after them;
2. a code fence: thinking = text before the first ``` fence, answer = from the fence on;
3. `####`: thinking = before the first `####`, answer = from `####` on (MemReward's convention);
4. `\\boxed{`: thinking = before the last `\\boxed{`, answer = from it on;
5. fallback (no marker): thinking = the first half of the text, answer = the second half, split at
   the whitespace nearest the middle (the released MemReward code splits in half too).
"""

from __future__ import annotations

import re

_THINK = re.compile(r"<think>(.*?)</think>(.*)", re.DOTALL)


def split_thinking_answer(text: str) -> tuple[str, str, str]:
    """Split `text` into (thinking, answer, rule) where rule names which of the rules above applied."""
    m = _THINK.search(text)
    if m:
        return m.group(1).strip(), m.group(2).strip(), "think_tags"
    fence = text.find("```")
    if fence >= 0:
        return text[:fence].strip(), text[fence:].strip(), "code_fence"
    hash_pos = text.find("####")
    if hash_pos >= 0:
        return text[:hash_pos].strip(), text[hash_pos:].strip(), "hash"
    boxed = text.rfind("\\boxed{")
    if boxed >= 0:
        return text[:boxed].strip(), text[boxed:].strip(), "boxed"
    middle = len(text) // 2
    spaces = [i for i, c in enumerate(text) if c.isspace()]
    cut = min(spaces, key=lambda i: abs(i - middle)) if spaces else middle
    return text[:cut].strip(), text[cut:].strip(), "half"
