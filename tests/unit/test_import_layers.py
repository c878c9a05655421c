"""The library's import graph, read from the source with ast (nothing is imported): every import, function-local
and TYPE_CHECKING ones included, runs to the importer's own layer or a lower one; no two sub-packages import
each other, directly or round a circle, nor do modules; lambda_trigger/ imports nothing of the project."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

# The library's parts (sub-packages and top-level modules), lowest first: a module may import from its
# own layer and those before it. A new part goes where what it imports puts it.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"settings", "tracking", "progress", "records"}),
    frozenset({"embedding"}),
    frozenset({"index"}),
    frozenset({"retrieval", "generation"}),
    frozenset({"evaluation"}),
    frozenset({"ingest"}),
    frozenset({"llm", "rollout"}),
    frozenset({"airflow"}),
    frozenset({"cli"}),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}

# Known violations still being removed elsewhere, each named by the part that owns it, as (importer,
# imported module) or a circle's modules; an entry that no longer occurs fails, so it is taken out. Empty:
# the last ones (index/factory.py importing airflow/, the index/pinecone*.py circle) are gone.
ALLOWED_UPWARD: set[tuple[str, str]] = set()
ALLOWED_MODULE_CIRCLES: set[frozenset[str]] = set()
ALLOWED_PACKAGE_CIRCLES: set[frozenset[str]] = set()

# What the Lambda must never import: it is zipped alone, with the standard library and boto3.
PROJECT = ("patientinsight", "serving", "dags", "plugins")


def _module_name(library: Path, path: Path) -> str:
    parts = ["patientinsight", *path.relative_to(library).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """The dotted names one import statement names: the module, and for `from m import x`, m.x too."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: from the importer's package, one level up per extra dot
            package = module.split(".") if is_package else module.split(".")[:-1]
            base = ".".join([*package[: len(package) - node.level + 1], *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        yield base
        yield from (f"{base}.{alias.name}" for alias in node.names)


def _names_imported(path: Path, module: str) -> Iterator[tuple[str, int]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        for name in _imported(node, module, path.name == "__init__.py"):
            yield name, getattr(node, "lineno", 0)


def _graph(library: Path) -> dict[str, dict[str, int]]:
    """Each library module -> the library modules it imports (the deepest one each import names) -> a line."""
    paths = {_module_name(library, p): p for p in sorted(library.rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {}
    for module, path in paths.items():
        edges = graph.setdefault(module, {})
        for name, line in _names_imported(path, module):
            while name and name not in paths:  # `from p import m` names the module m, else the package p
                name = name.rpartition(".")[0]
            if name and name != module:
                edges.setdefault(name, line)
    return graph


def _part(module: str) -> str | None:
    """The sub-package or top-level module a module belongs to; None for patientinsight/__init__.py."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _circles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.add(frozenset(component))
    return found


@pytest.fixture(scope="module")
def graph(repo_root: Path) -> dict[str, dict[str, int]]:
    return _graph(repo_root / "include" / "patientinsight")


def test_the_circle_finder_finds_circles_and_nothing_else() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": {"f"}, "g": set()}
    assert _circles(graph) == {frozenset("abc"), frozenset("de")}


def test_the_walk_sees_function_local_relative_and_from_package_imports(tmp_path: Path) -> None:
    library = tmp_path / "patientinsight"
    for name, text in {
        "__init__.py": "",
        "records/__init__.py": "",
        "records/ages.py": "def band():\n    from patientinsight.ingest import sample\n",
        "ingest/__init__.py": "",
        "ingest/sample.py": "from ..records.ages import band\nimport patientinsight.settings\n",
        "settings.py": "import os\n",
    }.items():
        (library / name).parent.mkdir(parents=True, exist_ok=True)
        (library / name).write_text(text)
    graph = _graph(library)
    assert graph["patientinsight.records.ages"] == {"patientinsight.ingest": 2, "patientinsight.ingest.sample": 2}
    assert set(graph["patientinsight.ingest.sample"]) == {"patientinsight.records.ages", "patientinsight.settings"}


def test_every_part_of_the_library_has_a_layer(graph: dict[str, dict[str, int]]) -> None:
    parts = {part for module in graph if (part := _part(module)) is not None}
    assert sorted(parts - RANK.keys()) == []


def test_no_import_runs_up_the_layers(graph: dict[str, dict[str, int]]) -> None:
    upward = {
        (module, target): line
        for module, edges in graph.items()
        for target, line in edges.items()
        if (a := _part(module)) in RANK and (b := _part(target)) in RANK and RANK[b] > RANK[a]
    }
    assert sorted(f"{m}:{line} imports {t}" for (m, t), line in upward.items() if (m, t) not in ALLOWED_UPWARD) == []
    assert sorted(ALLOWED_UPWARD - set(upward)) == [], "fixed: remove these from ALLOWED_UPWARD"


def test_no_packages_import_each_other_in_a_circle(graph: dict[str, dict[str, int]]) -> None:
    packages: dict[str, set[str]] = {}
    for module, edges in graph.items():
        if (a := _part(module)) is not None:
            packages.setdefault(a, set()).update(b for t in edges if (b := _part(t)) not in (None, a))
    circles = _circles(packages)
    assert sorted(sorted(c) for c in circles - ALLOWED_PACKAGE_CIRCLES) == []
    assert sorted(sorted(c) for c in ALLOWED_PACKAGE_CIRCLES - circles) == [], "fixed: remove from the allow-list"


def test_no_modules_import_each_other_in_a_circle(graph: dict[str, dict[str, int]]) -> None:
    circles = _circles({module: set(edges) for module, edges in graph.items()})
    assert sorted(sorted(c) for c in circles - ALLOWED_MODULE_CIRCLES) == []
    assert sorted(sorted(c) for c in ALLOWED_MODULE_CIRCLES - circles) == [], "fixed: remove from the allow-list"


def test_the_lambda_imports_nothing_of_the_project(repo_root: Path) -> None:
    found = []
    for path in sorted((repo_root / "lambda_trigger").rglob("*.py")):
        found += [f"{path.name}:{line} imports {name}" for name, line in _names_imported(path, path.stem)
                  if name.split(".")[0] in PROJECT]  # fmt: skip
    assert found == []


# The query service's image holds the library's serving side only: no ingest, evaluation, Airflow or
# MLflow code, not even behind a function-local import that only a request would reach, in serving/ or in
# any library module it reaches.
SERVING_NEVER = (
    *(f"patientinsight.{part}" for part in ("ingest", "evaluation", "airflow", "cli", "llm", "rollout", "tracking")),
    "airflow",
    "mlflow",
)


def _forbidden(name: str) -> bool:
    return any(name == never or name.startswith(never + ".") for never in SERVING_NEVER)


def test_the_service_imports_no_ingest_side(repo_root: Path, graph: dict[str, dict[str, int]]) -> None:
    library = repo_root / "include" / "patientinsight"
    paths = {_module_name(library, p): p for p in library.rglob("*.py")}
    found, reached = [], set()
    for path in sorted((repo_root / "serving").rglob("*.py")):
        module = ".".join(path.relative_to(repo_root).with_suffix("").parts)
        for name, line in _names_imported(path, module):
            if _forbidden(name):
                found.append(f"{path.relative_to(repo_root)}:{line} imports {name}")
            while name and name not in paths:
                name = name.rpartition(".")[0]
            if name:
                reached.add(name)
    todo = list(reached)  # the library modules serving/ reaches, through any number of imports
    while todo:
        for target in graph.get(todo.pop(), {}):
            if target not in reached:
                reached.add(target)
                todo.append(target)
    assert len(reached) > 20, "the walk reached the retrieval, index and embedding modules"
    for module in sorted(reached):
        found += [f"{module} is reached" for _ in [0] if _forbidden(module)]
        found += [f"{module}:{line} imports {name}" for name, line in _names_imported(paths[module], module)
                  if name.split(".")[0] in ("airflow", "mlflow")]  # fmt: skip
    assert found == []
