"""A run directory never mixes two configurations: what the config records hold, and reuse refused, accepted,
started over (memrl/run_dir.py; the end-to-end runs are in tests/stages/)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from memrl.run_dir import (
    PART_DONE,
    ConfigMismatch,
    RunDir,
    accept_hydra_files,
    check_reuse,
    check_steps,
    config_record,
    config_values,
    read_record,
    restore,
    reusable,
    snapshot,
)


@pytest.fixture
def train_cfg(compose_eval):
    def _cfg(*overrides: str):
        return compose_eval(*overrides, config_name="train")

    return _cfg


def _finished_train(root: Path, cfg, step: int = 2) -> None:
    """A train/ as a finished run leaves it: a checkpoint train/latest names, metrics, a summary, eval/."""
    ckpt = root / "train" / f"global_step_{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    (root / "train" / "latest").write_text(ckpt.name)
    (root / "train" / "metrics.jsonl").write_text("".join(json.dumps({"step": i + 1}) + "\n" for i in range(step)))
    (root / "train" / "summary.json").write_text(json.dumps({"steps": step}))
    (root / "eval").mkdir()
    (root / "eval" / "results_final_0.json").write_text("{}")
    if cfg is not None:
        (root / "train" / "built_with.json").write_text(json.dumps(config_record(cfg)))


def _done_part(root: Path, part: str, cfg) -> None:
    path = root / PART_DONE[part]
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {} if cfg is None else {"built_with": config_record(cfg, part)}
    path.write_text(json.dumps({"summary": {}, **record}))


def test_the_record_leaves_out_paths_logging_and_unused_groups(train_cfg):
    values = config_values(train_cfg("data=meds_math", "trainer.lr=3e-4"))
    assert values["trainer.lr"] == 3e-4 and values["seed"] == 0 and values["rollout.stop"] == []
    assert values["model.prompt_style"] == "plain"  # enums as their value
    for key in values:
        assert not key.startswith(("paths.", "logger.", "task_name", "reward.memreward.")), key
        assert key not in ("trainer.progress", "trainer.resume", "trainer.total_steps", "trainer.save_freq"), key
    # a data file under the data folder is compared as written: moving the data folder is not a new config
    assert values["data.train_set.path"] == "${paths.data_dir}/prepared/meds/train.jsonl"
    # MEDS off: only its switch; reward=memreward: its keys
    assert [k for k in values if k.startswith("meds.")] == ["meds.enable"]
    assert "reward.memreward.gnn.hidden" in config_values(train_cfg("reward=memreward"))
    # the warm-up parts depend on fewer keys, each on those of the parts before it
    memory, graph, gnn = (set(config_values(train_cfg("reward=memreward"), p)) for p in ("memory", "graph", "gnn"))
    assert memory < graph < gnn
    assert "reward.memreward.warmup.n" in memory and "trainer.lr" not in gnn and "rollout.n" not in gnn
    assert "reward.memreward.encoder_path" in graph - memory and "reward.memreward.gnn.lr" in gnn - graph


def test_only_excluded_keys_changed_is_the_same_record(train_cfg):
    a = config_record(train_cfg())
    b = config_record(
        train_cfg(
            "trainer.total_steps=500",
            "trainer.progress=false",
            "trainer.save_freq=1",
            "logger=wandb",
            "paths.output_root=/elsewhere",
            "grading.num_workers=0",
            "trainer.micro_batch_size=8",
        )
    )
    assert a == b
    assert config_record(train_cfg("seed=1"))["hash"] != a["hash"]


def test_train_reuse_with_another_result_key_is_refused_naming_it(train_cfg, tmp_path):
    root = tmp_path / "run"
    _finished_train(root, train_cfg())
    with pytest.raises(ConfigMismatch) as e:
        check_reuse(RunDir(root), train_cfg("trainer.lr=3e-4", "algo.clip_ratio_high=0.2"), "train")
    message = str(e.value)
    assert "trainer.lr: 0.0001 -> 0.0003" in message and "algo.clip_ratio_high: 0.28 -> 0.2" in message
    assert "--force (trainer.resume=disable)" in message and f"memrl train --resume {root}" in message
    assert (root / "train" / "summary.json").is_file() and (root / "eval").is_dir()  # nothing removed


def test_train_reuse_with_excluded_keys_is_accepted(train_cfg, tmp_path):
    root = tmp_path / "run"
    _finished_train(root, train_cfg())
    check_reuse(RunDir(root), train_cfg("trainer.total_steps=10", "trainer.progress=false"), "train")
    assert (root / "train" / "latest").is_file() and (root / "eval" / "results_final_0.json").is_file()
    assert read_record(root, "train") == config_record(train_cfg())


def test_keys_added_to_memrl_since_count_as_equal_at_their_default(train_cfg, tmp_path, caplog):
    """A run directory recorded before `dist` and `trainer.checkpoint` existed is reused by a config that leaves
    them at the schema's defaults (an INFO names them), refused by one that sets one otherwise."""
    root = tmp_path / "run"
    _finished_train(root, None)
    old = config_record(train_cfg())
    old["config"] = {k: v for k, v in old["config"].items() if not k.startswith(("dist.", "trainer.checkpoint."))}
    old["hash"] = "recorded-by-an-older-memrl"
    (root / "train" / "built_with.json").write_text(json.dumps(old))
    with caplog.at_level(logging.INFO, logger="memrl.run_dir"):
        check_reuse(RunDir(root), train_cfg(), "train")
    added = [r for r in caplog.records if "was recorded before memrl had" in r.getMessage()]
    assert len(added) == 1 and added[0].levelno == logging.INFO
    added = [added[0].getMessage()]
    assert "dist.backend, dist.mesh.replicate, dist.mesh.shard" in added[0] and "dist.strategy" in added[0]
    assert read_record(root, "train") == config_record(train_cfg())  # this run's record from now on
    # a key the old record lacks, set to another value than its default: the run computes something else
    (root / "train" / "built_with.json").write_text(json.dumps(old))
    with pytest.raises(ConfigMismatch, match=r'dist.mesh.replicate: "\(not set\)" -> 2'):
        check_reuse(RunDir(root), train_cfg("dist.mesh.replicate=2"), "train")


def test_start_over_removes_train_and_eval(train_cfg, tmp_path):
    root = tmp_path / "run"
    _finished_train(root, train_cfg())
    cfg = train_cfg("trainer.lr=3e-4", "trainer.resume=disable")
    check_reuse(RunDir(root), cfg, "train")
    assert not (root / "eval").exists() and sorted(p.name for p in (root / "train").iterdir()) == ["built_with.json"]
    assert read_record(root, "train") == config_record(cfg)


def test_unknown_resume_mode_names_the_choices(train_cfg, tmp_path):
    from memrl.errors import UserError

    with pytest.raises(UserError, match="trainer.resume=never; valid: auto .*disable"):
        check_reuse(RunDir(tmp_path), train_cfg("trainer.resume=never"), "train")


def test_a_run_killed_before_its_first_checkpoint_starts_clean(train_cfg, tmp_path):
    root = tmp_path / "run"
    (root / "train").mkdir(parents=True)
    (root / "train" / "metrics.jsonl").write_text('{"step": 1}\n')
    (root / "train" / "built_with.json").write_text(json.dumps(config_record(train_cfg())))
    check_reuse(RunDir(root), train_cfg(), "train")
    assert not (root / "train" / "metrics.jsonl").exists()


def test_an_old_run_without_record_is_compared_with_its_resolved_config(train_cfg, tmp_path, caplog):
    from omegaconf import OmegaConf

    root = tmp_path / "run"
    _finished_train(root, None)
    cfg = train_cfg()
    (root / ".hydra").mkdir()
    (root / ".hydra" / "resolved.yaml").write_text(OmegaConf.to_yaml({k: v for k, v in cfg.items() if k != "hydra"}))
    with pytest.raises(ConfigMismatch, match="trainer.lr: 0.0001 -> 0.0003"):
        check_reuse(RunDir(root), train_cfg("trainer.lr=3e-4"), "train")
    with caplog.at_level(logging.WARNING, logger="memrl.run_dir"):
        check_reuse(RunDir(root), cfg, "train")
    assert "no config record" in caplog.text
    assert read_record(root, "train") == config_record(cfg)  # adopted
    # without a resolved config either: adopted with a warning
    bare = tmp_path / "bare"
    _finished_train(bare, None)
    check_reuse(RunDir(bare), train_cfg("trainer.lr=3e-4"), "train")
    assert read_record(bare, "train") == config_record(train_cfg("trainer.lr=3e-4"))


def test_fewer_steps_than_trained_are_refused(tmp_path, train_cfg):
    root = tmp_path / "run"
    _finished_train(root, train_cfg(), step=4)
    assert check_steps(RunDir(root), 4) == 4 and check_steps(RunDir(root), 9) == 4
    with pytest.raises(ConfigMismatch, match="trained 4 steps .*asks for 2"):
        check_steps(RunDir(root), 2)
    assert check_steps(RunDir(tmp_path / "new"), 1) == 0


def test_warmup_part_built_with_another_config_is_refused_or_rebuilt(train_cfg, tmp_path):
    root = tmp_path / "run"
    built = train_cfg("reward=memreward")
    for part in ("memory", "graph", "gnn"):
        _done_part(root, part, built)
    _finished_train(root, built)
    run_dir = RunDir(root)
    # keys the memory does not depend on: reused
    assert reusable(run_dir, train_cfg("reward=memreward", "trainer.lr=3e-4", "rollout.n=4"), "memory")
    assert reusable(run_dir, built, "gnn")
    other = train_cfg("reward=memreward", "reward.memreward.warmup.n=4")
    with pytest.raises(ConfigMismatch, match=r"memory/ was built with another config.*warmup\.n: 8 -> 4"):
        reusable(run_dir, other, "memory")
    with pytest.raises(ConfigMismatch, match="reward.memreward.gnn.hidden: 512 -> 16"):
        check_reuse(run_dir, train_cfg("reward=memreward", "reward.memreward.gnn.hidden=16"), "gnn")
    # --force on the GNN: gnn/ and what was built from it (train/, eval/) go; memory/ and graph/ stay
    forced = train_cfg("reward=memreward", "reward.memreward.gnn.hidden=16", "trainer.resume=disable")
    check_reuse(run_dir, forced, "gnn")
    assert sorted(p.name for p in root.iterdir()) == ["graph", "memory"]


def test_warmup_without_record_adopts_this_config(train_cfg, tmp_path):
    root = tmp_path / "run"
    _done_part(root, "memory", None)
    cfg = train_cfg("reward=memreward")
    assert reusable(RunDir(root), cfg, "memory")
    assert read_record(root, "memory") == config_record(cfg, "memory")
    assert json.loads((root / "memory" / "done.json").read_text())["summary"] == {}  # the rest is kept


def test_warmup_from_parts_must_carry_the_sources_records(train_cfg, tmp_path):
    source, dest = tmp_path / "source", tmp_path / "dest"
    indomain = train_cfg("reward=memreward", "reward.memreward.warmup.n=4")
    for part in ("memory", "graph", "gnn"):
        _done_part(source, part, indomain)
    # the OOD run's own config differs (another data set): what counts is the source's record
    cfg = train_cfg("reward=memreward", f"reward.memreward.warmup_from={source}", "data.synthetic.seed=7")
    _done_part(dest, "memory", indomain)
    assert reusable(RunDir(dest), cfg, "memory")
    _done_part(dest, "graph", train_cfg("reward=memreward"))
    with pytest.raises(ConfigMismatch, match=f"warmup_from={source}'s.*warmup.n: 8 -> 4"):
        reusable(RunDir(dest), cfg, "graph")


def test_a_refused_command_restores_the_hydra_files_and_manifest(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    hydra = run_dir.root / ".hydra"
    hydra.mkdir()
    (hydra / "overrides.yaml").write_text("- trainer.lr=1e-4\n")
    (hydra / "config.yaml").write_text("a: 1\n")
    run_dir.write_manifest({"overrides": ["trainer.lr=1e-4"], "stages": {"train": {"status": "done"}}})
    accept_hydra_files(run_dir)
    saved = snapshot(run_dir)
    # what Hydra and the refused command write before the refusal
    (hydra / "overrides.yaml").write_text("- trainer.lr=3e-4\n")
    (hydra / "config.yaml").write_text("a: 2\n")
    run_dir.set_stage("train", "running")
    restore(run_dir, saved)
    assert (hydra / "overrides.yaml").read_text() == "- trainer.lr=1e-4\n"
    assert (hydra / "config.yaml").read_text() == "a: 1\n"
    assert run_dir.read_manifest()["stages"]["train"]["status"] == "done"


def test_a_directory_from_before_accepted_copies_gets_its_overrides_back(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    (run_dir.root / ".hydra").mkdir()
    run_dir.write_manifest({"overrides": ["seed=1", "reward=partial"]})
    saved = snapshot(run_dir)
    (run_dir.root / ".hydra" / "overrides.yaml").write_text("- seed=2\n")
    restore(run_dir, saved)
    import yaml

    assert yaml.safe_load((run_dir.root / ".hydra" / "overrides.yaml").read_text()) == ["seed=1", "reward=partial"]


def test_done_files_agree_with_the_warmup_stages():
    from memrl.memreward.artifacts import GNN_DONE, GRAPH_DONE
    from memrl.memreward.memory import DONE

    assert PART_DONE == {"memory": f"memory/{DONE}", "graph": f"graph/{GRAPH_DONE}", "gnn": f"gnn/{GNN_DONE}"}


def test_check_reuse_refuses_fewer_steps_before_loading_anything(train_cfg, tmp_path):
    root = tmp_path / "run"
    _finished_train(root, train_cfg(), step=4)
    with pytest.raises(ConfigMismatch, match="trained 4 steps"):
        check_reuse(RunDir(root), train_cfg("trainer.total_steps=3"), "train")
    check_reuse(RunDir(root), train_cfg("trainer.total_steps=5"), "train")


def test_an_old_run_with_data_under_the_data_folder_is_not_refused_for_its_resolved_paths(train_cfg, tmp_path):
    """.hydra/resolved.yaml holds data.train_set.path resolved; this config writes it as ${paths.data_dir}/...:
    that key cannot be compared, the others are."""
    from omegaconf import OmegaConf

    root = tmp_path / "run"
    _finished_train(root, None)
    cfg = train_cfg("data=meds_math")
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra")
    plain["paths"]["output_dir"] = str(root)
    resolved = OmegaConf.to_yaml(OmegaConf.create(plain), resolve=True)
    assert "${" not in resolved
    (root / ".hydra").mkdir()
    (root / ".hydra" / "resolved.yaml").write_text(resolved)
    with pytest.raises(ConfigMismatch) as e:
        check_reuse(RunDir(root), train_cfg("data=meds_math", "seed=3"), "train")
    assert "seed: 0 -> 3" in str(e.value) and "train_set.path" not in str(e.value)
    check_reuse(RunDir(root), cfg, "train")
