"""The layering of docs/architecture.md holds in the code: contracts, no import circles, one S3 boundary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("oarepo_s3", include_external_packages=True, exclude_type_checking_imports=True)


def test_import_contracts_are_kept():
    """pyproject.toml's import-linter contracts: layers, thin views, one S3 boundary."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_only_the_s3_module_imports_boto3_botocore_or_s3fs():
    graph = _graph()
    importers = {
        name: sorted(m for m in graph.find_modules_that_directly_import(name) if m.startswith("oarepo_s3"))
        for name in ("boto3", "botocore", "s3fs", "aiobotocore")
        if name in graph.modules
    }
    assert importers == {"boto3": ["oarepo_s3.s3"], "botocore": ["oarepo_s3.s3"]}


def test_no_import_circles():
    """No two modules of the package import each other, however indirectly (TYPE_CHECKING imports aside)."""
    graph = _graph()
    modules = sorted(m for m in graph.modules if m.startswith("oarepo_s3.") and m != "oarepo_s3")
    edges = {m: sorted(d for d in graph.find_modules_directly_imported_by(m) if d in modules) for m in modules}
    circles = [c for c in _strongly_connected(edges) if len(c) > 1]
    # A package's __init__ importing its own submodules is no circle of concern; anything else is.
    circles = [c for c in circles if not _only_package_and_children(c)]
    assert circles == []


def _only_package_and_children(component: list[str]) -> bool:
    packages = [m for m in component if all(o == m or o.startswith(m + ".") for o in component)]
    return bool(packages)


def _strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively (the graph is small, but recursion limits are not worth testing)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    found.append(sorted(component))
    return found
