"""The docs live in the repository and stay true to it.

- every markdown link in README.md and docs/ to a repository file points to a file that exists, and a link
  into a markdown file with `#anchor` names one of its headings;
- every `docs/<page>.md[#anchor]` named in code, configs, tests, scripts and the Makefile exists (with that
  heading);
- nothing refers to the developer notes that are not in the repository (METHODS.md, DESIGN.md, ...) or to
  their section codes ("A7.1", "B5");
- every `file.py::function` named in the docs is defined in that file, and every config key named in
  docs/methods.md exists in the composed `memrl train` config (a `group=option` preset names a file in conf/);
- every `key=value` override of a `memrl` command shown in README.md or docs/ names an existing key or preset.
- the default docs/methods.md writes after a key is the composed one.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
METHODS = DOCS / "methods.md"
MARKDOWN = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
# where code, configs and tests may name a doc
SOURCE_DIRS = ("memrl", "conf", "tests", "scripts")
SOURCE_FILES = ("Makefile", "pyproject.toml")
SOURCE_SUFFIXES = {".py", ".yaml", ".yml", ".toml", ".md", ".txt", ".cfg", ".sh"}

LINK_RE = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
DOC_REF_RE = re.compile(r"\bdocs/([\w.-]+\.md)(#[\w-]+)?")
DEV_NOTES_RE = re.compile(r"\b(METHODS|DESIGN|PEERS|STYLE|TOY)\.md\b")
# the developer notes' section codes: "A7.1", "B5", "B8.2" (not "B007" in a noqa comment, not "A100")
SECTION_CODE_RE = re.compile(r"(?<![\w./-])[AB][1-8](?:\.\d{1,2})?(?![\w])")
FUNC_REF_RE = re.compile(r"`((?:memrl|scripts|tests)/[\w/]+\.py)::([\w.]+)`")
CONFIG_GROUPS = ("algo", "reward", "meds", "trainer", "rollout", "eval", "data", "grading", "model", "logger", "paths")
KEY_RE = re.compile(r"`(" + "|".join(CONFIG_GROUPS) + r")((?:\.[A-Za-z_][\w]*)*)(?:=([^`\s]*))?`")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link and code markup dropped, lower case, punctuation removed,
    spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every heading anchor of a markdown file (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if in_fence or not m:
            continue
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        out.add(slug if n == 0 else f"{slug}-{n}")
        seen[slug] = n + 1
    return frozenset(out)


def _strip_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _source_files() -> list[Path]:
    files = [ROOT / f for f in SOURCE_FILES if (ROOT / f).exists()]
    for d in SOURCE_DIRS:
        files += [p for p in sorted((ROOT / d).rglob("*")) if p.is_file() and p.suffix in SOURCE_SUFFIXES]
    return [p for p in files if "__pycache__" not in p.parts]


def _check_target(source: Path, target: Path, anchor: str | None) -> str | None:
    """An error message, or None when `target` (and its `anchor`) exist."""
    rel = source.relative_to(ROOT)
    if not target.exists():
        return f"{rel}: {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target} does not exist"
    if anchor and target.suffix == ".md" and anchor not in anchors(target):
        return f"{rel}: no heading #{anchor} in {target.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_resolve(page):
    errors = []
    for m in LINK_RE.finditer(_strip_code_blocks(page.read_text(encoding="utf-8"))):
        url = m.group(1) or m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", url):  # http:, https:, mailto:
            continue
        path, _, anchor = url.partition("#")
        target = page if not path else (page.parent / path).resolve()
        if (err := _check_target(page, target, anchor or None)) is not None:
            errors.append(err)
    assert not errors, "\n".join(errors)


def test_doc_references_in_code_resolve():
    errors = []
    for f in _source_files():
        for lineno, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for m in DOC_REF_RE.finditer(line):
                anchor = m.group(2)[1:] if m.group(2) else None
                if (err := _check_target(f, DOCS / m.group(1), anchor)) is not None:
                    errors.append(f"{err} (line {lineno})")
    assert not errors, "\n".join(errors)


def test_nothing_refers_to_notes_outside_the_repository():
    errors = []
    for f in [*_source_files(), *MARKDOWN]:
        if f == Path(__file__).resolve():  # this file spells the patterns out
            continue
        for lineno, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if DEV_NOTES_RE.search(line):
                errors.append(f"{f.relative_to(ROOT)}:{lineno}: {line.strip()}")
            elif f.suffix in {".py", ".yaml", ".yml"} and (m := SECTION_CODE_RE.search(line)):
                errors.append(f"{f.relative_to(ROOT)}:{lineno}: section code {m.group(0)!r}: {line.strip()}")
    assert not errors, "refer to docs/<page>.md#<heading> instead:\n" + "\n".join(errors)


@cache
def _definitions(path: Path) -> frozenset[str]:
    """Top-level functions and classes of a module, and `Class.method` for their methods."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names.update(
                f"{node.name}.{b.name}" for b in node.body if isinstance(b, ast.FunctionDef | ast.AsyncFunctionDef)
            )
    return frozenset(names)


def test_functions_named_in_docs_exist():
    errors = []
    found = 0
    for page in MARKDOWN:
        for m in FUNC_REF_RE.finditer(page.read_text(encoding="utf-8")):
            found += 1
            path, name = ROOT / m.group(1), m.group(2)
            if not path.exists():
                errors.append(f"{page.name}: {m.group(1)} does not exist")
            elif name not in _definitions(path):
                errors.append(f"{page.name}: {m.group(1)} defines no {name}")
    assert found >= 40, f"docs/methods.md should map formulas to functions; found only {found} references"
    assert not errors, "\n".join(errors)


def test_config_keys_in_methods_exist(compose_eval):
    cfg = compose_eval(config_name="train")
    missing = object()
    keys, presets, errors = set(), set(), []
    for m in KEY_RE.finditer(METHODS.read_text(encoding="utf-8")):
        group, rest, value = m.group(1), m.group(2), m.group(3)
        if rest:
            keys.add(group + rest)
        elif value is not None:
            presets.add((group, value))
    for key in sorted(keys):
        if OmegaConf.select(cfg, key, default=missing, throw_on_missing=False) is missing:
            errors.append(f"docs/methods.md names `{key}`, which `memrl train --cfg job` does not have")
    for group, option in sorted(presets):
        if not (ROOT / "conf" / group / f"{option}.yaml").exists():
            errors.append(
                f"docs/methods.md names the preset `{group}={option}`; conf/{group}/{option}.yaml does not exist"
            )
    assert len(keys) >= 60, f"expected the config keys of every formula in docs/methods.md, found {len(keys)}"
    assert not errors, "\n".join(errors)


# "`key` (default; ...)" in a Config -> code table
DEFAULT_RE = re.compile(r"`((?:" + "|".join(CONFIG_GROUPS) + r")\.[\w.]+)` \(([^;,)\s]+)")


def test_defaults_in_methods_match_the_config(compose_eval):
    """The default written after a key in docs/methods.md is the one `memrl train --cfg job` shows."""
    cfg = compose_eval(config_name="train")
    errors, checked = [], 0
    for m in DEFAULT_RE.finditer(METHODS.read_text(encoding="utf-8")):
        key, written = m.group(1), m.group(2)
        actual = OmegaConf.select(cfg, key, default=None)
        if isinstance(actual, bool) or actual is None:
            if written not in ("true", "false", "null"):
                continue
            ok = written == {True: "true", False: "false", None: "null"}[actual]
        elif isinstance(actual, int | float):
            try:
                ok = float(written) == float(actual)
            except ValueError:
                continue
        elif isinstance(actual, str):
            ok = written == actual
        else:
            continue
        checked += 1
        if not ok:
            errors.append(f"docs/methods.md: `{key}` ({written}), but the composed default is {actual!r}")
    assert checked >= 60, f"found only {checked} documented defaults"
    assert not errors, "\n".join(errors)


# a memrl command in the docs, inline or in a code block: `memrl train algo=grpo trainer.lr=1e-6 -m seed=0,1`
COMMAND_RE = re.compile(r"(?:^|`)\s*(?:\.venv(?:-vllm)?/bin/)?memrl (?:train|eval|rollout|graph|gnn)\b([^`#\n]*)", re.M)


def test_overrides_in_documented_commands_exist(compose_eval):
    """Every `key=value` of a documented command names a key of the composed config, and every
    `group=option` (`+group=a,b` in sweeps) an option file in conf/."""
    cfg = compose_eval(config_name="train")
    missing = object()
    errors, checked = [], 0
    for page in MARKDOWN:
        for m in COMMAND_RE.finditer(page.read_text(encoding="utf-8")):
            for token in m.group(1).split():
                if "=" not in token or token.startswith("-"):
                    continue
                key, value = token.lstrip("+").split("=", 1)
                checked += 1
                if "." not in key and (ROOT / "conf" / key).is_dir():
                    errors += [
                        f"{page.name}: `{token}`: conf/{key}/{option}.yaml does not exist"
                        for option in value.split(",")
                        if not (ROOT / "conf" / key / f"{option}.yaml").exists()
                    ]
                elif OmegaConf.select(cfg, key, default=missing, throw_on_missing=False) is missing:
                    errors.append(f"{page.name}: `{token}`: the train config has no key {key}")
    assert checked >= 50, f"found only {checked} overrides in the documented commands"
    assert not errors, "\n".join(errors)


def test_github_slug():
    assert github_slug("MemReward code vs paper") == "memreward-code-vs-paper"
    assert github_slug("Data flow of memrl train") == "data-flow-of-memrl-train"
    assert github_slug("2. MemReward (the [paper](x.md))") == "2-memreward-the-paper"
    assert github_slug("`memrl train`: resume") == "memrl-train-resume"
