"""The tiny default model: tokenizer round trip, architecture, and a build_info.json that tells the truth.

The model is built once per session by the `tiny_model_dir` fixture (tests/conftest.py) and cached under
$MEMRL_CACHE (or ~/.cache/memrl).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memrl.policy import tiny

STRINGS = [
    "Compute 37 + 8 - 5.\nPut the final answer in \\boxed{}.\n",
    "Careful: 37 + 8 = 45. 45 - 5 = 40. \\boxed{40}",
    "Guess: \\boxed{37}",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "Café prices rose 12½% — ¿cuánto? 日本語 🙂 tab\there\r\n  double  spaces",
    "End with #### followed by the final answer.",
    "",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def build_info(tiny_model_dir) -> dict:
    return json.loads((Path(tiny_model_dir) / tiny.BUILD_INFO).read_text())


def test_tokenizer_loads_back_with_identical_ids(tiny_model_dir, tokenizer, tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    raw = Tokenizer.from_file(str(Path(tiny_model_dir) / "tokenizer.json"))
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    for s in STRINGS:
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]
        assert ids == raw.encode(s, add_special_tokens=False).ids
        assert ids == again(s, add_special_tokens=False)["input_ids"]
        # byte level: any text comes back exactly, nothing is unknown
        assert tokenizer.decode(ids) == s


def test_tokenizer_layout(tokenizer):
    assert 256 < len(tokenizer) <= 512
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.padding_side == "left"
    assert not getattr(tokenizer, "chat_template", None)
    # every digit is a token of its own
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("12345 + 678", add_special_tokens=False)["input_ids"])
    assert [t for t in tokens if any(c.isdigit() for c in t)] == list("12345678")
    # the form markers are one token each, so the choice of behaviour is the first token
    from memrl.data.synthetic import FORM_MARKERS

    firsts = {tokenizer(m, add_special_tokens=False)["input_ids"][0] for m in FORM_MARKERS.values()}
    assert len(firsts) == len(FORM_MARKERS)


def test_architecture(tiny_model_dir, tokenizer):
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert head_dim >= 32  # vLLM serves no smaller heads
    assert config.model_type == "qwen2" and config.architectures == ["Qwen2ForCausalLM"]
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (128, 4, 4)
    assert config.tie_word_embeddings and config.vocab_size == len(tokenizer)
    assert config.eos_token_id == config.pad_token_id == tokenizer.eos_token_id
    gen = GenerationConfig.from_pretrained(tiny_model_dir)
    assert gen.eos_token_id == gen.pad_token_id == tokenizer.eos_token_id


def test_build_info_targets(build_info):
    ev = build_info["eval"]
    greedy = ev["greedy"]["accuracy"]
    # the aim: low enough that RL has room, high enough that the policy is competent (measured 0.28, README)
    assert 0.2 < greedy < 0.6
    sampled = ev["sampled"]
    assert sampled["pass@8"] > greedy + 0.2
    assert sampled["careful_form_accuracy"] > 2 * sampled["shortcut_form_accuracy"]
    # the careful procedure alone is right much more often than the greedy choice of form: RL has a behaviour
    # to select (measured 0.695)
    assert ev["greedy"]["careful_forced_accuracy"] > greedy + 0.2
    assert set(ev["per_family"]) == {"add", "sub", "mul", "mix"}
    assert build_info["settings"]["seed"] == build_info["seed"]
    for key in ("torch", "transformers", "tokenizers"):
        assert build_info["versions"][key]
    assert 0.8e6 < build_info["model"]["parameters"] < 1.3e6


def test_build_info_greedy_accuracy_is_reproducible(tiny_model_dir, tokenizer, build_info):
    """Recompute greedy accuracy on the first 64 test problems with plain `generate`: build_info cannot lie."""
    import torch
    from transformers import AutoModelForCausalLM

    from memrl.config.schema import SyntheticConfig
    from memrl.data.synthetic import load_split
    from memrl.data.templates import format_prompt
    from memrl.grading.extract import last_boxed

    problems = load_split("test", SyntheticConfig(seed=build_info["settings"]["data_seed"]))[:64]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    enc = tokenizer([format_prompt(p) for p in problems], return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=64)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def correct(text: str, gold: str) -> bool:
        boxed = last_boxed(text)
        return boxed is not None and boxed.strip().lstrip("-").isdigit() and int(boxed) == int(gold)

    ok = [correct(t, p.answer) for t, p in zip(texts, problems)]
    recorded = build_info["eval"]["greedy"]["accuracy_first64"]
    assert abs(sum(ok) / len(ok) - recorded) <= 0.1
    per_problem = build_info["eval"]["greedy_correct"]
    agree = sum(per_problem[p.id] == k for p, k in zip(problems, ok))
    assert agree >= 0.9 * len(problems)


# ---------------------------------------------------------------------------------------------------
# the cache: atomic build under a lock (with a stand-in builder, no training)


def _fake_build(out_dir, settings=None, progress=True):
    out_dir = Path(out_dir)
    (out_dir / "config.json").write_text("{}")
    (out_dir / tiny.BUILD_INFO).write_text("{}")
    return {}


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMRL_CACHE", str(tmp_path / "c"))
    assert tiny.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("MEMRL_CACHE")
    assert tiny.default_cache_dir() == Path.home() / ".cache" / "memrl"


def test_ensure_builds_once_and_atomically(monkeypatch, tmp_path):
    calls = []

    def counting(out_dir, settings=None, progress=True):
        calls.append(out_dir)
        assert Path(out_dir).name.startswith(f".{target.name}.tmp-")  # built aside, renamed at the end
        return _fake_build(out_dir)

    monkeypatch.setattr(tiny, "build_tiny_model", counting)
    target = tiny.tiny_model_dir(tmp_path)
    # leftovers of a killed build of this key are swept, a half-written target is not trusted
    (tmp_path / f".{target.name}.tmp-dead").mkdir()
    target.mkdir()
    (target / "config.json").write_text("{}")
    path = tiny.ensure_tiny_model(tmp_path, progress=False)
    assert path == target and (path / tiny.BUILD_INFO).is_file()
    assert tiny.ensure_tiny_model(tmp_path, progress=False) == path
    assert len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [target.name]


def _inputs(examples=(("Compute 1 + 2.", "\\boxed{3}"),)) -> tiny.BuildInputs:
    return tiny.BuildInputs(list(examples), ["Compute 1 + 2.\\boxed{3}"], [])


def test_cache_folder_is_the_key_of_the_inputs(monkeypatch, tmp_path):
    import dataclasses

    monkeypatch.setattr(tiny, "_DATA_HASHES", {})  # the process's memo holds the real data's hashes
    settings = tiny.TinySettings()
    key = tiny.build_key(settings, _inputs, tmp_path)
    assert tiny.build_key(settings, _inputs, tmp_path) == key
    # a changed build setting, data, recipe revision or library version is a new key
    assert tiny.build_key(dataclasses.replace(settings, lr=1e-3), _inputs, tmp_path) != key
    assert tiny.build_key(settings, _inputs, tmp_path, task={"task": "rule_tags"}) != key
    monkeypatch.setattr(tiny, "_DATA_HASHES", {})
    assert tiny.build_key(settings, lambda: _inputs([("Compute 1 + 2.", "\\boxed{4}")]), tmp_path / "b") != key
    monkeypatch.setattr(tiny, "RECIPE", tiny.RECIPE + 1)
    assert tiny.build_key(settings, _inputs, tmp_path) != key
    monkeypatch.setattr(tiny, "RECIPE", tiny.RECIPE - 1)
    monkeypatch.setattr(tiny, "library_versions", lambda: {"python": "3.11", "torch": "3"})
    assert tiny.build_key(settings, _inputs, tmp_path) != key
    # the default model's folder follows its settings
    monkeypatch.setattr(tiny, "_DATA_HASHES", {})
    monkeypatch.setattr(tiny, "build_inputs", lambda s: _inputs())
    before = tiny.tiny_model_dir(tmp_path)
    changed = dataclasses.replace(settings, lr=1e-3)
    monkeypatch.setattr(tiny, "TinySettings", lambda: changed)
    assert tiny.tiny_model_dir(tmp_path) != before  # a changed build never reuses the old model


def test_a_source_edit_keeps_the_key(monkeypatch, tmp_path):
    """The data's hash is memoized by the source that generates it: an edit that leaves the data as it is
    regenerates the data once and finds the same key (no rebuild)."""
    package = tmp_path / "memrl"
    (package / "data").mkdir(parents=True)
    source = package / "data" / "synthetic.py"
    source.write_text("def f():\n    import random\n    return random\n")
    monkeypatch.setattr(tiny, "_PACKAGE", package)
    monkeypatch.setattr(tiny, "_DATA_HASHES", {})
    made = []

    def make():
        made.append(1)
        return _inputs()

    cache = tmp_path / "cache"
    key = tiny.build_key(tiny.TinySettings(), make, cache)
    assert tiny.build_key(tiny.TinySettings(), make, cache) == key and len(made) == 1  # memoized in the process
    tiny._DATA_HASHES.clear()
    assert tiny.build_key(tiny.TinySettings(), make, cache) == key and len(made) == 1  # and on disk
    tiny._DATA_HASHES.clear()
    source.write_text("import random\n\n\ndef f():\n    return random\n")  # the import moved to the top
    assert tiny.build_key(tiny.TinySettings(), make, cache) == key and len(made) == 2


def test_todays_inputs_keep_the_cached_folder(tmp_path):
    """The default model's inputs today are those main built tiny-qwen2-v1-18e0fdecb8 from (LEGACY_FOLDERS): a
    refactor that fails this changed the warm-start data, the tokenizer corpus or the measured problems; if that is
    intended, remove the LEGACY_FOLDERS entry (the model is then rebuilt once, under its new key)."""
    assert tiny.tiny_model_dir(tmp_path).name == f"{tiny.TINY_NAME}-18e0fdecb8"


def test_each_key_has_its_own_lock(tmp_path):
    a, b = tmp_path / f"{tiny.TINY_NAME}-aaaa", tmp_path / f"{tiny.TINY_NAME}-bbbb"
    (tmp_path / f".{b.name}.tmp-building").mkdir()  # another key's build in progress: not swept
    built = []

    def build(out):
        built.append(out.name)
        _fake_build(out)

    # a build of key a goes on while key b's lock is held (the old shared lock would block here)
    with tiny._file_lock(tmp_path / f".{b.name}.lock"):
        assert tiny.ensure_built(a, build) == a
    assert built and built[0].startswith(f".{a.name}.tmp-") and (tmp_path / f".{a.name}.lock").is_file()
    assert (tmp_path / f".{b.name}.tmp-building").is_dir()
    assert not (tmp_path / f".{tiny.TINY_NAME}.lock").exists()


def test_failed_build_leaves_nothing(monkeypatch, tmp_path):
    def broken(out_dir, settings=None, progress=True):
        (Path(out_dir) / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny, "build_tiny_model", broken)
    with pytest.raises(KeyboardInterrupt):
        tiny.ensure_tiny_model(tmp_path, progress=False)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]
