"""The typed schema is the one definition of every setting: each field is read by the code (no dead keys)."""

from __future__ import annotations

import ast
import dataclasses
import re
import typing
from pathlib import Path

from memrl.config import schema

REPO = Path(__file__).resolve().parents[2]
ROOT_NAMES = {"cfg", "config"}  # the variables that hold a whole app config
# parameters typed in a comment rather than an annotation (written when memrl/data/synthetic.py's bytes were the tiny
# model's cache key; the key now covers the build's data, memrl.policy.tiny.build_key): its `cfg` is a SyntheticConfig
# (and so is memrl/data/toys.py's, another branch's new file)
TYPED_ELSEWHERE = {
    "synthetic.py": {"cfg": "SyntheticConfig"},
    "toys.py": {"cfg": "SyntheticConfig"},
    # memrl/dist reads the `dist` group through a parameter named settings (a DistConfig)
    "runtime.py": {"settings": "DistConfig"},
    "shard.py": {"settings": "DistConfig"},
}


def _dataclass_in(tp) -> type | None:
    """The schema dataclass a field holds (directly, optional, or as list elements), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


def schema_paths() -> tuple[set[tuple[str, ...]], dict[str, set[tuple[str, ...]]]]:
    """(every leaf field path of TrainAppConfig, {dataclass name: the paths where it sits})."""
    leaves: set[tuple[str, ...]] = set()
    where: dict[str, set[tuple[str, ...]]] = {"TrainAppConfig": {()}, "EvalAppConfig": {()}}

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls, vars(schema))
        for f in dataclasses.fields(cls):
            inner = _dataclass_in(hints[f.name])
            path = (*prefix, f.name)
            if inner is None:
                leaves.add(path)
            else:
                where.setdefault(inner.__name__, set()).add(path)
                walk(inner, path)

    walk(schema.TrainAppConfig, ())
    return leaves, where


class Reads(ast.NodeVisitor):
    """Config paths read in one module: attribute chains, resolved through aliases (`a = cfg.algo`) and through
    parameters annotated with a schema class (`rollout_cfg: RolloutConfig`)."""

    def __init__(self, groups: set[str], where: dict[str, set[tuple[str, ...]]]) -> None:
        self.groups, self.where = groups, where
        self.aliases: dict[str, set[tuple[str, ...]]] = {}
        self.reads: set[tuple[str, ...]] = set()

    def chain(self, node) -> list[str] | None:
        names = []
        while isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        return [node.id, *reversed(names)]

    def resolve(self, names: list[str]) -> set[tuple[str, ...]]:
        base, rest = names[0], names[1:]
        if base in self.aliases:
            return {(*p, *rest) for p in self.aliases[base]}
        for i, name in enumerate(names):
            if i > 0 and names[i - 1] in ROOT_NAMES:
                return {tuple(names[i:])}  # cfg.seed, self.cfg.algo.clip_ratio_high
            if name in self.groups and i > 0:
                return {tuple(names[i:])}  # anything.reward.memreward.threshold
        return set()

    def visit_FunctionDef(self, node) -> None:
        saved = dict(self.aliases)
        for arg in [*node.args.args, *node.args.kwonlyargs]:
            # `spec: DatasetSpec`, `synthetic: SyntheticConfig | None`
            names = {n.id for n in ast.walk(arg.annotation) if isinstance(n, ast.Name)} if arg.annotation else set()
            for name in names & set(self.where):
                self.aliases[arg.arg] = self.aliases.get(arg.arg, set()) | self.where[name]
        self.generic_visit(node)
        self.aliases = saved

    visit_AsyncFunctionDef = visit_FunctionDef

    def bind(self, target, value) -> None:
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
            for t, v in zip(target.elts, value.elts):
                self.bind(t, v)
        elif isinstance(target, ast.Name):
            names = self.chain(value)
            paths = self.resolve(names) if names else self.getter(value)
            if paths:
                self.aliases[target.id] = paths

    def visit_Assign(self, node) -> None:
        for target in node.targets:
            self.bind(target, node.value)
        self.generic_visit(node)

    def visit_For(self, node) -> None:
        self.bind(node.target, node.iter)  # for spec in cfg.data.eval_sets: list elements share the path
        self.generic_visit(node)

    def visit_comprehension(self, node) -> None:
        self.bind(node.target, node.iter)
        self.generic_visit(node)

    def visit_Attribute(self, node) -> None:
        names = self.chain(node)
        if names:
            self.reads |= self.resolve(names)
        self.generic_visit(node)

    def getter(self, node) -> set[tuple[str, ...]]:
        """The paths `cfg.get("seed", 0)`, `mr.get("warmup_from")`, `getattr(spec, "name")` and the loaders'
        `_get(spec, "name")` read."""
        if not isinstance(node, ast.Call):
            return set()
        func, args = node.func, node.args
        obj = key = None
        if isinstance(func, ast.Attribute) and func.attr == "get" and args:
            obj, key = func.value, args[0]
        elif isinstance(func, ast.Name) and func.id in ("getattr", "_get") and len(args) >= 2:
            obj, key = args[0], args[1]
        names = self.chain(obj) if obj is not None else None
        if names and isinstance(key, ast.Constant) and isinstance(key.value, str):
            return {(*p, key.value) for p in self.resolve(names)}
        return set()

    def visit_Call(self, node) -> None:
        self.reads |= self.getter(node)
        self.generic_visit(node)


def code_reads() -> set[tuple[str, ...]]:
    leaves, where = schema_paths()
    groups = {p[0] for p in leaves if len(p) > 1}
    reads: set[tuple[str, ...]] = set()
    for path in sorted((REPO / "memrl").rglob("*.py")):
        if path.name == "schema.py":
            continue
        visitor = Reads(groups, where)
        visitor.aliases = {k: set(where[v]) for k, v in TYPED_ELSEWHERE.get(path.name, {}).items()}
        tree = ast.parse(path.read_text())
        # module-level functions see aliases bound in enclosing functions only: visit each function afresh
        visitor.visit(tree)
        reads |= visitor.reads
    # keys the configs themselves read by interpolation: ${task_name}, ${paths.output_root}
    for path in (REPO / "conf").rglob("*.yaml"):
        for ref in re.findall(r"\$\{([a-zA-Z_][\w.]*)\}", path.read_text()):
            reads.add(tuple(ref.split(".")))
    return reads


def test_every_schema_field_is_read():
    leaves, _ = schema_paths()
    reads = code_reads()
    # a read of a whole group node counts for none of its fields; a read of a leaf (or a deeper path) does
    read = {p for p in leaves if any(r[: len(p)] == p for r in reads)}
    dead = sorted(".".join(p) for p in leaves - read)
    assert not dead, f"schema fields no code reads (remove them or use them): {dead}"


def test_the_checker_sees_a_dead_key():
    """The check itself: a field read nowhere, and reads through an alias and an annotated parameter."""
    src = """
def f(cfg):
    a, t = cfg.algo, cfg.trainer
    return a.clip_ratio_high + t.lr + cfg.seed

def g(r: RolloutConfig):
    mr = r.top_k
    return mr
"""
    leaves, where = schema_paths()
    v = Reads({p[0] for p in leaves if len(p) > 1}, where)
    v.visit(ast.parse(src))
    assert {("algo", "clip_ratio_high"), ("trainer", "lr"), ("seed",), ("rollout", "top_k")} <= v.reads
    assert ("algo", "clip_ratio_low") not in v.reads


def field_help() -> dict[str, str]:
    """{"Class.field": its attribute docstring} of every schema dataclass (cleanrl's `Args` style)."""
    tree = ast.parse((REPO / "memrl" / "config" / "schema.py").read_text())
    out = {}
    for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
        if not any(getattr(d, "id", None) == "dataclass" for d in cls.decorator_list):
            continue
        for stmt, nxt in zip(cls.body, [*cls.body[1:], None]):
            if isinstance(stmt, ast.AnnAssign):
                doc = nxt.value.value if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) else ""
                out[f"{cls.name}.{stmt.target.id}"] = doc
    return out


def test_every_schema_field_has_help_beside_its_default():
    helps = field_help()
    assert len(helps) > 150
    assert not [k for k, v in helps.items() if not v.strip()], "fields without a docstring below them"
    assert "DAPO's clip-higher" in helps["AlgoConfig.clip_ratio_high"]


def test_cfg_job_prints_every_field(tmp_path):
    """`memrl train --cfg job` prints the whole composed config: every schema field, with its value."""
    import os
    import subprocess
    import sys

    import yaml

    cmd = [sys.executable, "-c", "from memrl.cli import main; main()", "train", "--cfg", "job"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ})
    assert out.returncode == 0, out.stderr[-2000:]
    printed = yaml.safe_load(out.stdout)
    leaves, _ = schema_paths()
    optional_nodes = {("data", "eval_sets"), ("data", "train_set"), ("data", "val_set")}  # lists / None-able specs

    def has(path):
        node = printed
        for i, key in enumerate(path):
            if path[:i] in optional_nodes and (node is None or isinstance(node, list)):
                return True
            if not isinstance(node, dict) or key not in node:
                return False
            node = node[key]
        return True

    assert not [".".join(p) for p in leaves if not has(p)]
    assert printed["algo"]["clip_ratio_high"] == 0.28 and printed["reward"]["shapers"] == ["overlong", "meds"]
