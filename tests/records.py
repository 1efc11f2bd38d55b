"""What the DVC record must cover, computed from the code: each stage's import closure over
ofa/ and flows/, the params keys its commands read, and the import graph (no circles).

A stage's closure starts at the module defining its `ofa-cli` command (that module's own
imports, the command function's imports and cli_app, whose `load` every command calls) and
follows every import of every module reached, function-local ones included, plus the package
`__init__` files that importing a submodule runs. The entry `ofa/cli.py` only registers the
command modules and is not followed.
"""

from __future__ import annotations

import ast
import inspect
import os
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ofa", "flows")
GLOBAL_OPTIONS = {"--params", "--preset"}  # `ofa-cli` options that take a value


@dataclass(frozen=True)
class Stage:
    cmds: tuple[str, ...]
    deps: tuple[str, ...]
    params: tuple[str, ...]


def resolved_stages(root: Path = ROOT) -> dict[str, Stage]:
    """dvc.yaml's stages as DVC resolves them (foreach expanded): commands, deps, params."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    out = {}
    with Repo(str(root)) as repo:
        for st in repo.index.stages:
            cmds = st.cmd if isinstance(st.cmd, list) else [st.cmd]
            parts = tuple(p.strip() for c in cmds for p in c.split("&&"))
            # deps relative to the repository root (a stage of ablation/dvc.yaml says ../ofa)
            deps = tuple(os.path.relpath(os.path.join(st.wdir, d.def_path), root)
                         for d in st.deps if not isinstance(d, ParamsDependency))
            out[st.addressing] = Stage(
                parts, tuple(Path(d).as_posix() for d in deps),
                tuple(k for d in st.deps if isinstance(d, ParamsDependency) for k in d.params))
    return out


def module_file(name: str, root: Path = ROOT) -> Path | None:
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(tree: ast.AST, root: Path) -> set[str]:
    """Project modules an AST imports (anywhere in it)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in PACKAGES and module_file(n, root)}
    return found


def module_imports(name: str, root: Path = ROOT) -> set[str]:
    return _imports(ast.parse(module_file(name, root).read_text()), root)


def closure(start: set[str], root: Path = ROOT) -> set[str]:
    """start, every project module they import (transitively) and their packages' __init__."""
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += sorted(module_imports(name, root) - seen)
    return seen


def command_modules(args: list[str], root: Path = ROOT) -> set[str]:
    """The closure of one `ofa-cli ...` command line."""
    from ofa.cli import app

    words = iter(args[1:])
    command = None
    for word in words:
        if word in GLOBAL_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            command = word
            break
    commands = app.registered_commands
    for group in app.registered_groups:  # `ofa-cli ablation teacher ...`: a command of a group
        if group.name == command:
            command = next((w for w in words if not w.startswith("-")), None)
            commands = group.typer_instance.registered_commands
    for info in commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        if name == command:
            fn = info.callback
            body = ast.parse(textwrap.dedent(inspect.getsource(fn)))
            module = fn.__module__
            tree = ast.parse(module_file(module, root).read_text())
            top = ast.Module([n for n in tree.body
                              if isinstance(n, (ast.Import, ast.ImportFrom))], [])
            own = _imports(top, root)  # the command module's own imports, not its other commands'

            # the command module's file, without following its other commands' imports
            return {module} | closure({"ofa.cli_app"} | own | _imports(body, root), root)
    raise LookupError(f"no ofa-cli command {command!r} in {' '.join(args)}")


def stage_modules(stage: Stage, root: Path = ROOT) -> set[str]:
    out = set()
    for cmd in stage.cmds:
        args = shlex.split(cmd)
        if args and args[0] == "ofa-cli":
            out |= command_modules(args, root)
    return out


def covered(path: str, deps: tuple[str, ...]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def missing_deps(stages: dict[str, Stage], root: Path = ROOT) -> list[tuple[str, str]]:
    """(stage, module file) for every module a stage can import but does not list."""
    out = []
    for name, stage in stages.items():
        for mod in sorted(stage_modules(stage, root)):
            rel = module_file(mod, root).relative_to(root).as_posix()
            if not covered(rel, stage.deps):
                out.append((name, rel))
    return out


def stale_deps(stages: dict[str, Stage], root: Path = ROOT) -> list[tuple[str, str]]:
    """(stage, dep) for every listed code dependency that does not exist."""
    return [(name, d) for name, st in stages.items() for d in st.deps
            if d.split("/")[0] in PACKAGES and not (root / d).exists()]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Explicit imports between ofa/ modules (a package's __init__ running is not an edge)."""
    names = []
    for path in sorted((root / "ofa").rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        names.append(".".join(parts))
    return {n: {m for m in module_imports(n, root) if m != n} for n in names}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle found by a depth-first search (empty when there is none)."""
    found, state, path = [], {}, []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def _present(raw: dict, key: str) -> bool:
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def stage_of(stages: dict[str, Stage], argv: list[str]) -> str | None:
    line = shlex.join(["ofa-cli", *argv])
    return next((n for n, st in stages.items() if line in st.cmds), None)


def undeclared_reads(stages: dict[str, Stage], traces: list[dict],
                     params: dict) -> list[tuple[str, str]]:
    """(stage, key) for each params key a traced command read that its stage does not declare;
    keys absent from params.yaml (optional ones left out) cannot be declared and are skipped.
    A trace of a command that belongs to no stage is reported as stage '?'."""
    out = set()
    for trace in traces:
        name = stage_of(stages, trace["argv"])
        if name is None:
            out.add(("?", shlex.join(trace["argv"])))
            continue
        for key in trace["reads"]:
            if _present(params, key) and not any(key == p or key.startswith(p + ".")
                                                 for p in stages[name].params):
                out.add((name, key))
    return sorted(out)
