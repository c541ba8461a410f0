"""The package's imports run one way: _core <- _cpu/_gpu/_dask <- public modules <- integrations
<- command line, with no import cycle.

An ``ast`` scan of every module under pyckafast/ (imports inside functions included: a lazy
import is still a dependency), relative imports resolved, ``from package import name`` read as
the submodule when ``name`` is one. Re-exports in ``__init__.py`` files are not arrows of the
layering (a package face imports what it shows), and the command-line modules are left out
until they move into their own package.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "pyckafast"

# The command line: the top layer (its package and the entry point).
CLI = ("pyckafast.cli", "pyckafast.__main__")
INTEGRATIONS = ("pyckafast.torch", "pyckafast._torch", "pyckafast.compat", "pyckafast.torchmetrics",
                "pyckafast.robustness", "pyckafast.theory", "pyckafast.transforms")
PRODUCERS = ("pyckafast._cpu", "pyckafast._gpu", "pyckafast._dask")
MAX_UPWARD = 4


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*"):
        if path.suffix not in (".py", ".so") or "__pycache__" in path.parts:
            continue
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts).split(".cpython")[0]  # pyckafast/_ext.cpython-311-....so
        found[name.removesuffix(".__init__")] = path
    for ext in ("_ext", "_twins"):  # the compiled extensions (setup.py), built in place or not
        found.setdefault(f"pyckafast.{ext}", ROOT / f"{ext}.so")
    return found


def layer(module: str) -> int:
    """0 _core (and the compiled extensions), 1 producers, 2 public, 3 integrations, 4 CLI."""
    def under(prefixes) -> bool:
        return any(module == p or module.startswith(p + ".") for p in prefixes)

    if under(("pyckafast._core", "pyckafast._ext", "pyckafast._twins")):
        return 0
    if under(PRODUCERS):
        return 1
    if under(INTEGRATIONS):
        return 3
    if under(CLI):
        return 4
    return 2


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The pyckafast modules ``name`` imports (anywhere in the file)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # ``from package import name``: the submodule when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # "pyckafast._core.pairs.Bounds" -> module
                target = target.rpartition(".")[0]
            if target.startswith("pyckafast") and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports (scanned modules only; __init__ files and the entry
    point out)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        if path.suffix != ".py" or name == "pyckafast.__main__" or path.name == "__init__.py":
            continue
        graph[name] = {t for t in _imports(name, path, modules)
                       if t in modules and modules[t].name != "__init__.py"}
    return graph


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in graph.items() for b in targets
                  if layer(b) > layer(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_scan_sees_the_package():
    """The scan resolves relative and submodule imports (a test of the test)."""
    graph = import_graph()
    assert "pyckafast._core.pairs" in graph["pyckafast._dask.map"]
    assert "pyckafast._core.combine" in graph["pyckafast.linear"]  # from ._core import combine
    assert "pyckafast._ext" in graph["pyckafast._cpu.ops_cpp"]  # from .. import _ext
    assert layer("pyckafast._cpu.tiled_map") == 1 and layer("pyckafast.compat.cka") == 3


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}"


def test_few_imports_run_up_the_layering():
    arrows = upward(import_graph())
    print("\nimports that run up the layering:")
    for a, b in arrows:
        print(f"  {a} (layer {layer(a)}) -> {b} (layer {layer(b)})")
    assert len(arrows) <= MAX_UPWARD, arrows


def test_cpu_kernels_do_not_need_the_gpu_package():
    """A CPU module never imports the GPU package (ops_numba_rbf found its header there)."""
    graph = import_graph()
    assert not [(a, b) for a, targets in graph.items() for b in targets
                if a.startswith("pyckafast._cpu") and b.startswith("pyckafast._gpu")]


def test_the_dispatch_table_points_only_into_the_producer_packages():
    """The producers' string targets are arrows the scan cannot see: they must not point back up
    into the public modules."""
    from pyckafast._core.dispatch import PRODUCERS

    targets = {entry.target.partition(":")[0] for entry in PRODUCERS.values()}
    assert all(layer(t) == 1 for t in targets), sorted(t for t in targets if layer(t) != 1)
