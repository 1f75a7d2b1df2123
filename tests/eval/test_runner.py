"""The evaluation runner: its settings (a view of the config), scoring one benchmark, sample-weighted averages."""

import pytest

from memrl.data.problem import Problem
from memrl.data.templates import format_prompt
from memrl.errors import UserError
from memrl.eval.runner import FIELDS, VAL_KS, EvalSettings, evaluate_problems, split_batches, weighted_average
from memrl.grading import Grader
from memrl.rollout.records import Rollout


def test_weighted_average_weighs_by_problem_count():
    per = {
        "a": {"n_problems": 30, "greedy_acc": 0.5, "n": 4, "mean@4": 0.25, "pass@k": {1: 0.25, 4: 0.5}},
        "b": {"n_problems": 10, "greedy_acc": 0.1, "n": 4, "mean@4": 0.75, "pass@k": {1: 0.75, 4: 1.0}},
    }
    out = weighted_average(per)
    assert out["n_problems"] == 40
    assert out["greedy_acc"] == pytest.approx((30 * 0.5 + 10 * 0.1) / 40)  # 0.4, not the plain mean 0.3
    assert out["mean@4"] == pytest.approx((30 * 0.25 + 10 * 0.75) / 40)
    assert out["pass@k"] == {1: pytest.approx(0.375), 4: pytest.approx(0.625)}


def test_mixed_sample_counts_report_greedy_only():
    per = {
        "a": {"n_problems": 2, "greedy_acc": 1.0, "n": 4, "pass@k": {1: 0.5}},
        "b": {"n_problems": 2, "greedy_acc": 0.0, "n": 8, "pass@k": {1: 0.5}},
    }
    out = weighted_average(per)
    assert out == {"n_problems": 4, "greedy_acc": 0.5}


# --------------------------------------------------------------------------------------- settings view


def test_settings_read_the_config_where_it_defines_them(compose_eval):
    cfg = compose_eval(
        "eval.n=6", "eval.temperature=0.7", "eval.top_p=0.9", "rollout.max_new_tokens=48", "rollout.stop=[END]",
        "data.answer_format=hash", "model.system_prompt=be brief", "seed=3",
    )  # fmt: skip
    s = EvalSettings(cfg, "plain")
    assert s.as_dict() == {
        "greedy": True,
        "n": 6,
        "ks": (1, 2, 4, 6),  # default_ks: powers of two up to n, and n
        "temperature": 0.7,
        "top_p": 0.9,
        "max_new_tokens": 48,  # eval.max_new_tokens=None falls back to rollout.max_new_tokens
        "stop": ("END",),
        "prompt_style": "plain",
        "answer_format": "hash",
        "system_prompt": "be brief",
        "seed": 3,
    }
    assert list(s.as_dict()) == list(FIELDS)
    # a view, not a copy: it reads the config each time
    cfg.eval.max_new_tokens = 20
    cfg.eval.ks = [4, 2, 2]
    assert (s.max_new_tokens, s.ks) == (20, (2, 4))


def test_validation_settings_are_greedy_plus_val_n_samples(compose_eval):
    cfg = compose_eval("trainer.val_n=6", "eval.greedy=false", "eval.n=0", "eval.ks=[3]", config_name="train")
    s = EvalSettings(cfg, "plain", validation=True)
    assert (s.greedy, s.n, s.ks) == (True, 6, (1, 2, 4))  # eval.greedy / eval.n / eval.ks do not apply
    cfg.trainer.val_n = 200
    assert s.ks == VAL_KS


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["eval.n=-1"], "eval.n must be >= 0, got -1"),
        (["eval.greedy=false", "eval.n=0"], "nothing to evaluate"),
        (["eval.n=4", "eval.ks=[1,8]"], r"eval.ks=\[1, 8\] has k values outside 1..n \(n=4\): \[8\]"),
    ],
)
def test_bad_eval_settings_fail_before_generation(compose_eval, overrides, message):
    with pytest.raises(UserError, match=message):
        EvalSettings(compose_eval(*overrides), "plain")


# --------------------------------------------------------------------------------------- the runner


class ScriptedEngine:
    """Answers from a script: problem id -> the greedy answer and the n sampled answers (None: no answer)."""

    def __init__(self, script: dict[str, tuple[str | None, list[str | None]]], problems: list[Problem]):
        self.script, self.calls = script, []
        self.ids = {format_prompt(p): p.id for p in problems}

    def generate(self, prompts, params, progress=None):
        self.calls.append(params)
        out = []
        for i, prompt in enumerate(prompts):
            greedy, sampled = self.script[self.ids[prompt]]
            answers = [greedy] if params.greedy else sampled
            assert len(answers) == params.n
            group = []
            for j, a in enumerate(answers):
                text = f"so \\boxed{{{a}}}" if a is not None else "I do not know" * 3
                finish = "stop" if a is not None else "length"
                group.append(Rollout(i, j, prompt, text, list(range(len(text.split()))), [1], finish))
            out.append(group)
            if progress:
                progress(1)
        return out


PROBLEMS = [Problem("p1", "1+1?", "2"), Problem("p2", "2+3?", "5"), Problem("p3", "3*3?", "9")]
SCRIPT = {
    "p1": ("2", ["2", "2", "3", "2"]),  # greedy right, 3 of 4 samples right
    "p2": ("4", ["4", None, "4", "4"]),  # greedy wrong, no sample right, one truncated
    "p3": ("9", ["9", "1", "2", "9"]),  # greedy right, 2 of 4
}


def test_runner_scores_greedy_samples_and_pass_at_k(compose_eval):
    settings = EvalSettings(compose_eval("eval.n=4", "seed=11", "rollout.max_new_tokens=32"), "plain")
    engine = ScriptedEngine(SCRIPT, PROBLEMS)
    advanced = []
    with Grader(num_workers=0) as grader:
        metrics, samples = evaluate_problems(engine, None, PROBLEMS, settings, grader, advanced.append)
    greedy, sampled = engine.calls
    assert (greedy.n, greedy.temperature, greedy.max_new_tokens) == (1, 0.0, 32)
    assert (sampled.n, sampled.temperature, sampled.seed, sampled.max_new_tokens) == (4, 1.0, 11, 32)
    assert sum(advanced) == 6
    assert metrics["correct_counts"] == [3, 0, 2]
    assert metrics["greedy_acc"] == pytest.approx(2 / 3)
    assert metrics["mean@4"] == pytest.approx(5 / 12)
    # pass@2: 1 - C(4-c, 2) / C(4, 2) per problem: c=3 -> 1, c=0 -> 0, c=2 -> 1 - 1/6
    assert metrics["pass@k"] == {1: pytest.approx(5 / 12), 2: pytest.approx((1 + 0 + 5 / 6) / 3), 4: 2 / 3}
    assert metrics["distinct@4"] == pytest.approx((2 + 2 + 3) / 3)  # {2,3}, {4,None}, {9,1,2}
    assert metrics["truncated"] == pytest.approx(1 / 15)
    assert len(samples) == 15 and [s["mode"] for s in samples].count("greedy") == 3
    assert samples[4] | {"prompt": None} == {
        "id": "p1", "mode": "sample", "sample_index": 1, "gold": "2", "completion": "so \\boxed{2}",
        "extracted": "2", "correct": True, "grade_status": "ok", "finish_reason": "stop", "num_tokens": 2,
        "prompt": None,
    }  # fmt: skip


def test_runner_on_shards_adds_up_to_the_whole(compose_eval):
    """A benchmark split into problem lists (e.g. one per rank) gives the whole benchmark's per-problem counts."""
    settings = EvalSettings(compose_eval("eval.n=4"), "plain")
    with Grader(num_workers=0) as grader:
        whole, _ = evaluate_problems(ScriptedEngine(SCRIPT, PROBLEMS), None, PROBLEMS, settings, grader)
        parts = [
            evaluate_problems(ScriptedEngine(SCRIPT, PROBLEMS), None, shard, settings, grader)[0]
            for shard in (PROBLEMS[:1], PROBLEMS[1:])
        ]
    assert [c for m in parts for c in m["correct_counts"]] == whole["correct_counts"]
    assert weighted_average({"a": parts[0], "b": parts[1]})["greedy_acc"] == pytest.approx(whole["greedy_acc"])


@pytest.mark.parametrize("world", [2, 3])
def test_split_batches_over_ranks_equal_one_call(tiny_model_dir, world):
    """Each rank's whole batches (r, r + W, ...; `split_batches`, rank and world given, no process group) sample
    what one call on all prompts samples for them, and every rank makes the same number of calls (a rank short
    of batches repeats batch 0 and drops it): 7 prompts in 4 batches of 2."""
    from memrl.config.schema import ModelConfig
    from memrl.policy.load import load_policy
    from memrl.rollout.hf_engine import HFEngine
    from memrl.rollout.records import SamplingParams

    model, tok, _ = load_policy(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu", dtype="float32"))
    engine = HFEngine(model, tok, batch_size=2)
    prompts = [format_prompt(Problem(f"p{i}", f"{i}+{i + 2}?", str(2 * i + 2))) for i in range(7)]
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=12, seed=4)
    whole = [[r.token_ids for r in g] for g in engine.generate(prompts, params)]
    calls: list[int] = []
    counting = CountingEngine(engine, calls)
    done: dict[int, list[list[int]]] = {}
    per_rank = []
    for rank in range(world):
        before = len(calls)
        part = split_batches(counting, prompts, params, rank, world)
        per_rank.append(len(calls) - before)
        assert not set(part) & set(done)
        done.update((i, [r.token_ids for r in g]) for i, g in part.items())
    assert [done[i] for i in range(len(prompts))] == whole
    assert per_rank == [2] * world  # 4 batches: ceil(4 / W) calls on every rank


class CountingEngine:
    """An engine that records the number of prompts of each `generate` call and passes it on."""

    def __init__(self, engine, calls):
        self.engine, self.calls, self.batch_size = engine, calls, engine.batch_size

    def generate(self, prompts, params, progress=None):
        self.calls.append(len(prompts))
        return self.engine.generate(prompts, params, progress)
