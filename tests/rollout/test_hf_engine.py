"""The transformers rollout engine on the tiny model: shapes, finish reasons, stop strings, padding."""

from __future__ import annotations

import pytest
import torch

from memrl.data.templates import format_prompt
from memrl.policy.load import load_policy
from memrl.rollout.hf_engine import HFEngine
from memrl.rollout.records import SamplingParams


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from memrl.config.schema import ModelConfig

    model, tok, _ = load_policy(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu", dtype="float32"))
    return HFEngine(model, tok, batch_size=4)


@pytest.fixture(scope="module")
def prompts():
    from memrl.config.schema import SyntheticConfig
    from memrl.data.synthetic import load_split

    return [format_prompt(p) for p in load_split("test", SyntheticConfig())[:6]]


def test_n_rollouts_per_prompt_in_order(engine, prompts):
    groups = engine.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=40, seed=0))
    assert len(groups) == len(prompts)
    for i, g in enumerate(groups):
        assert [r.sample_index for r in g] == [0, 1, 2]
        assert all(r.prompt_index == i and r.prompt == prompts[i] for r in g)
        for r in g:
            assert 1 <= r.num_tokens <= 40
            assert engine.tokenizer.decode(r.token_ids, skip_special_tokens=True) == r.text
            assert r.prompt_token_ids == engine.tokenizer(prompts[i], add_special_tokens=False)["input_ids"]


def test_greedy_is_deterministic_and_independent_of_batching(engine, prompts):
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=40)
    batched = [g[0].token_ids for g in engine.generate(prompts, params)]
    again = [g[0].token_ids for g in engine.generate(prompts, params)]
    single = [engine.generate([p], params)[0][0].token_ids for p in prompts]
    assert batched == again
    # left padding must not change what the model generates for a prompt
    assert batched == single


def test_seeded_sampling_repeats(engine, prompts):
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=30, seed=123)
    a = [[r.token_ids for r in g] for g in engine.generate(prompts, params)]
    b = [[r.token_ids for r in g] for g in engine.generate(prompts, params)]
    assert a == b


def test_seeded_batches_sample_alike_in_any_split(engine, prompts):
    """A call on the whole batches from prompt i on, with params.from_prompt(i), samples what the call on all
    prompts samples for them (evaluation splits its batches over ranks this way); the global RNG stays put."""
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=30, seed=5)
    state = torch.random.get_rng_state()
    whole = [[r.token_ids for r in g] for g in engine.generate(prompts, params)]
    assert torch.equal(torch.random.get_rng_state(), state)
    first = engine.batch_size
    assert len(prompts) > first  # two batches: [0, first) and [first, len)
    head = engine.generate(prompts[:first], params)
    tail = engine.generate(prompts[first:], params.from_prompt(first))
    assert [[r.token_ids for r in g] for g in head + tail] == whole
    # the second batch does not repeat the first one's draws: seeded from its own prompt index
    same_seed = engine.generate(prompts[first:], params)
    assert [[r.token_ids for r in g] for g in same_seed] != whole[first:]


def test_finish_reasons(engine, prompts):
    short = engine.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=3))
    assert all(g[0].finish_reason == "length" and g[0].num_tokens == 3 for g in short)
    full = engine.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=64))
    stopped = [g[0] for g in full if g[0].finish_reason == "stop"]
    assert stopped, "the tiny model ends its answers with EOS"
    assert all(r.token_ids[-1] == engine.tokenizer.eos_token_id for r in stopped)


def test_stop_strings(engine, prompts):
    groups = engine.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=64, stop=("=",)))
    for g in groups:
        r = g[0]
        if "=" in r.text:
            assert r.finish_reason == "stop"
            # generation ended right after the stop string: nothing follows it but what its token carried
            assert r.text.count("=") == 1


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_shared_prompt_cache_changes_no_completion(engine, prompts, monkeypatch, top_p):
    """n > 1 runs each prompt once and repeats its KV cache: the same completions as n copies run through
    the model (same seed, same random draws), and the cache is really used."""
    import memrl.rollout.hf_engine as hf

    params = SamplingParams(n=4, temperature=1.0, top_p=top_p, max_new_tokens=32, seed=7)
    calls = []
    real = hf._shared_prompt_cache

    def spy(*args):
        cache = real(*args)
        calls.append(cache is not None)
        return cache

    monkeypatch.setattr(hf, "_shared_prompt_cache", spy)
    shared = engine.generate(prompts, params)
    assert calls and all(calls)
    monkeypatch.setattr(hf, "_shared_prompt_cache", lambda *args: None)
    plain = engine.generate(prompts, params)
    assert [[(r.token_ids, r.finish_reason, r.prompt_token_ids) for r in g] for g in shared] == [
        [(r.token_ids, r.finish_reason, r.prompt_token_ids) for r in g] for g in plain
    ]


def test_greedy_copies_are_the_greedy_completion(engine, prompts):
    one = [g[0].token_ids for g in engine.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=32))]
    three = engine.generate(prompts, SamplingParams(n=3, temperature=0.0, max_new_tokens=32))
    assert [[r.token_ids for r in g] for g in three] == [[ids] * 3 for ids in one]


def test_shared_prompt_cache_not_for_one_sample_or_one_token(engine):
    import torch

    from memrl.rollout.hf_engine import _shared_prompt_cache

    ids = torch.tensor([[5, 6, 7]])
    assert _shared_prompt_cache(engine.model, ids, torch.ones_like(ids), 1) is None
    assert _shared_prompt_cache(engine.model, ids[:, :1], torch.ones_like(ids[:, :1]), 4) is None
    assert _shared_prompt_cache(engine.model, ids, torch.ones_like(ids), 4) is not None


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(n=3, temperature=1.0, max_new_tokens=16, seed=1),  # the shared prompt cache path
        SamplingParams(n=2, temperature=0.0, max_new_tokens=16, stop=("=",)),
        SamplingParams(n=1, temperature=0.0, max_new_tokens=16),
    ],
)
def test_generate_emits_no_warning(engine, prompts, params, monkeypatch, capfd):
    """A default `memrl train` calls generate every step: no FutureWarning (transformers deprecates
    `past_key_values` for `cache`) and nothing on stderr from transformers' own logger either."""
    import warnings

    import memrl.rollout.hf_engine as hf

    used = []
    real = hf._shared_prompt_cache
    monkeypatch.setattr(hf, "_shared_prompt_cache", lambda *a: used.append(real(*a)) or used[-1])
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        groups = engine.generate(prompts, params)
    assert capfd.readouterr().err == ""
    assert len(groups) == len(prompts) and all(len(g) == params.n for g in groups)
    # the n > 1 case really went through the cache (the call that used to warn)
    assert used and all((c is not None) == (params.n > 1) for c in used)
