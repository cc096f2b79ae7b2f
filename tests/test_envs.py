"""Per-stage environments hold what their rules run; module boundaries.

Conda cannot run here, so each environment is checked the way it would fail: every
rule's command imports (and prints its help) in a subprocess where the importable
packages of every distribution outside the rule's environment are blocked. A rule's
environment is its ``conda:`` file; the file installs the package with one extra of
pyproject.toml (``-e ..[extra]``); the allowed distributions are that extra, the core
dependencies and everything they depend on (from the installed metadata).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO
from rest2visual.cli import COMMANDS

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
SRC = REPO / "src" / "rest2visual"

#: blocks imports of the named top-level packages (argv[1]: JSON list), then runs argv[2:]
BLOCKER = """
import importlib.abc, json, sys
blocked = set(json.loads(sys.argv[1]))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not in this environment (blocked)")
sys.meta_path.insert(0, Block())
module, what = sys.argv[2], sys.argv[3]
mod = __import__(module, fromlist=["main"])
if what == "help":
    try:
        mod.main(["--help"])
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
print("ok")
"""


def _name(requirement: str) -> tuple[str, list[str]]:
    """('dist-name', [extras]) of a requirement string, the name normalised."""
    m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[([^\]]*)\])?", requirement)
    return re.sub(r"[-_.]+", "-", m.group(1)).lower(), [
        e.strip() for e in (m.group(2) or "").split(",") if e.strip()]


def _extra(extra: str | None) -> set[str]:
    """Distribution names an extra of rest2visual asks for (None: the core), nested extras too."""
    reqs = PYPROJECT["dependencies"] if extra is None else PYPROJECT["optional-dependencies"][extra]
    out = set()
    for req in reqs:
        name, extras = _name(req)
        if name == "rest2visual":
            for e in extras:
                out |= _extra(e)
        else:
            out.add(name)
    return out


def _closure(dists: set[str]) -> set[str]:
    """``dists`` and everything they require (installed metadata, no extras, markers honoured)."""
    todo, seen = list(dists), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for req in requires:
            spec, _, marker = req.partition(";")
            if "extra" in marker:
                continue
            if marker.strip():
                from packaging.markers import Marker

                if not Marker(marker).evaluate():
                    continue
            todo.append(_name(spec)[0])
    return seen


def _importable_by_dist() -> dict[str, set[str]]:
    """top-level import name → normalised names of the distributions that provide it."""
    return {top: {_name(d)[0] for d in dists} for top, dists in md.packages_distributions().items()}


def blocked_for(extra: str) -> list[str]:
    """Import names of the other families' distributions that ``extra``'s environment lacks."""
    families = [e for e in PYPROJECT["optional-dependencies"] if e not in ("all", "test")]
    everything = _closure(set().union(*(_extra(e) for e in families)))
    allowed = _closure(_extra(None) | _extra(extra))
    return sorted(top for top, dists in _importable_by_dist().items()
                  if dists & everything and not dists & allowed and not top.startswith("_"))


def rule_commands() -> list[tuple[str, str, str]]:
    """(rule, conda env file name, rest2visual command) of every rule that runs one."""
    out = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        blocks = re.split(r"^\s*rule (\w+):\s*$", smk.read_text(), flags=re.M)
        for rule, body in zip(blocks[1::2], blocks[2::2]):
            env = re.search(r'conda:\s*\n\s*"([^"]+)"', body)
            commands = re.findall(r"rest2visual ([a-z][a-z0-9-]*)", body)
            commands += re.findall(r"\{params\.launcher\} ([a-z][a-z-]*)", body)
            for command in dict.fromkeys(commands):
                if env is None:
                    pytest.fail(f"{smk.name}: rule {rule} runs `rest2visual {command}` "
                                "without a conda: environment")
                out.append((rule, Path(env.group(1)).name, command))
    return out


def env_extra(env_file: str) -> str:
    text = (REPO / "envs" / env_file).read_text()
    found = re.findall(r"-e \.\.\[(\w+)\]", text)
    assert len(found) == 1, f"envs/{env_file}: expected one `-e ..[extra]` line, found {found}"
    return found[0]


RULES = rule_commands()


def test_every_rule_with_a_command_was_found():
    rules = {r for r, _, _ in RULES}
    assert {"register_to_mni", "pack_triplets", "train_model", "evaluate_model",
            "download_nsd_key"} <= rules, rules
    assert {env for _, env, _ in RULES} == {p.name for p in (REPO / "envs").glob("*.yaml")}


def test_each_env_installs_its_extra_and_the_families_are_lean():
    extras = {env_extra(p.name) for p in (REPO / "envs").glob("*.yaml")}
    assert extras == {"preprocess", "dataset", "model", "download"}
    assert "torch" not in _closure(_extra(None) | _extra("preprocess") | _extra("dataset")
                                   | _extra("download"))
    for extra in extras:
        assert "snakemake" not in _closure(_extra(extra)), extra
    # the full install keeps everything of every family
    every = set().union(*(_extra(e) for e in extras), {"snakemake"})
    assert every <= _extra("all") and _extra("all") <= _extra("test")


@pytest.mark.parametrize("rule,env,command", RULES, ids=[f"{r}-{c}" for r, _, c in RULES])
def test_rule_command_imports_with_only_its_env(rule, env, command):
    module = COMMANDS[command][0].split(":")[0]
    blocked = blocked_for(env_extra(env))
    proc = subprocess.run([sys.executable, "-c", BLOCKER, json.dumps(blocked), module, "help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        f"rule {rule} (envs/{env}) `rest2visual {command}`:\n{proc.stderr[-3000:]}")


def test_blocking_is_real():
    """The control: a model command fails where torch is blocked (the preprocess env)."""
    blocked = blocked_for("preprocess")
    assert "torch" in blocked and "boto3" in blocked and "snakemake" in blocked
    proc = subprocess.run([sys.executable, "-c", BLOCKER, json.dumps(blocked),
                           "rest2visual.model.train", "import"], capture_output=True, text=True)
    assert proc.returncode != 0 and "torch is not in this environment" in proc.stderr


def test_dataset_package_imports_without_torch():
    modules = sorted(f"rest2visual.dataset.{p.stem}" for p in (SRC / "dataset").glob("*.py"))
    code = "; ".join(f"import {m}" for m in modules)
    for module in modules:
        proc = subprocess.run([sys.executable, "-c", BLOCKER, json.dumps(["torch"]), module,
                               "import"], capture_output=True, text=True)
        assert proc.returncode == 0, f"{module}:\n{proc.stderr[-2000:]}"
    assert code  # every module of the package was tried


def _module_level_imports(path: Path) -> set[str]:
    """rest2visual modules imported at module level (not inside functions) by ``path``."""
    out = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("rest2visual."):
                p = SRC.parent / name.replace(".", "/")
                if p.with_suffix(".py").exists() or (p / "__init__.py").exists():
                    out.add(name)
    return out


def test_no_import_cycles():
    graph = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        # `from pkg import submodule` in pkg's own modules: pkg is initialised first anyway
        graph[name] = {m for m in _module_level_imports(path) if not name.startswith(m + ".")}
    # lazy (function-level) imports too, within the dataset package: pack ↔ validate was one
    for a in ("rest2visual.dataset.pack", "rest2visual.dataset.validate"):
        tree = ast.parse((SRC.parent / (a.replace(".", "/") + ".py")).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rest2visual."):
                graph[a].add(node.module)
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " → ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
