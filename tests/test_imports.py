"""Imports inside `scoutdoc` point one way: down the layers, and never in a circle.

The layers, top to bottom (a module may import its own layer and the layers below, never above):

    5  cli                                  the Typer app (a module or a package)
    4  session, batch                       orchestration: ingest -> prompt -> engine -> store
    3  engines, fit, excerpt, grounding     running a prompt (engines/chat.py renders the chat template),
                                            fitting documents to a window, sentences for the question,
                                            an answer's names and numbers checked against the documents
    2  prompt, ingest, store, snapshots,    messages, documents, SQLite and the snapshots' disk budget,
       models                               the model catalog
    1  runtime                              the inference runtime: files and tensors, no names or documents
    0  errors, progress, settings, units, hashing, wording, the package's own __init__

This refines shared/ARCHITECTURE.md's `cli -> batch, session -> fit, prompt, engines, ingest, store,
models -> runtime -> errors, progress, settings`: within its middle layer, engines build on
`Message`/`Prompt` (prompt.py) and the catalog (models.py), so those sit one level lower. `ingest`
sits beside prompt (documents are data a prompt is made from). Every import counts, including
those inside functions (lazy imports still tie the modules together), and so do imports between
the modules of one package, which must not form a cycle either. Importing `pkg.sub` is not counted
as importing `pkg/__init__.py` (Python runs it first, but it is no dependency of ours), so a package
`__init__` may import its submodules as long as they do not import the package back.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "scoutdoc"

LEVELS = {
    "cli": 5,
    "session": 4, "batch": 4,
    "engines": 3, "fit": 3, "excerpt": 3, "grounding": 3,
    "prompt": 2, "ingest": 2, "store": 2, "store_faults": 2, "store_schema": 2, "snapshots": 2, "models": 2,
    "runtime": 1,
    "errors": 0, "progress": 0, "settings": 0, "units": 0, "hashing": 0, "wording": 0, "__init__": 0,
}


def _module_name(path: Path) -> str:
    parts = ["scoutdoc", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The scoutdoc modules `name` imports anywhere in its body; `from pkg import sub` counts as an
    import of the submodule `pkg.sub` when there is one, else of `pkg`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import scoutdoc.runtime.weights.x` -> the module it names
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    missing = sorted({_layer(m) for m in _modules()} - set(LEVELS))
    assert not missing, f"give these a level in LEVELS (and the docstring): {missing}"


def test_no_upward_import():
    upward = [
        f"{src} -> {dst}"
        for src, targets in sorted(_graph().items())
        for dst in sorted(targets)
        if LEVELS.get(_layer(dst), 0) > LEVELS.get(_layer(src), 0)
    ]
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "modules that import each other in a circle:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from . import d\nfrom .d import x\n", {"pkg.sub.d"}),
        ("def f():\n    from .. import b\n    import pkg.c.x\n", {"pkg.b", "pkg.c"}),
        ("from .. import name_in_init\nimport os\n", {"pkg"}),
    ],
)
def test_the_checker_sees_relative_and_lazy_imports(tmp_path, source, expected):
    path = tmp_path / "a.py"
    path.write_text(source)
    assert _imports("pkg.sub.a", path, {"pkg", "pkg.b", "pkg.c", "pkg.sub", "pkg.sub.a", "pkg.sub.d"}) == expected


def test_the_checker_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_cli_reaches_the_model_only_through_engines_and_the_catalog():
    """The CLI never imports torch or the runtime itself (engines/__init__.py promises so): the memory
    plan it prints comes from `models.memory_plan`, answers from an engine."""
    known = set(_modules())
    offenders = []
    for name, path in _modules().items():
        if _layer(name) != "cli":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        external = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        external |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level and n.module}
        offenders += [f"{name} imports {m}" for m in sorted(external) if m.split(".")[0] == "torch"]
        offenders += [f"{name} imports {m}" for m in sorted(_imports(name, path, known)) if _layer(m) == "runtime"]
    assert not offenders, "\n".join(offenders)
