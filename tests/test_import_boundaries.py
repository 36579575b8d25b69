"""The layout's promises, read from the source (an AST walk, nothing imported): aiomqtt and paho
only under bridge/ingest/, the database drivers only under bridge/store/, aiohttp's client only
under bridge/vendors/ and bridge/http.py, and no import cycle in bridge/.

Every import counts, at module level or inside a function: a cycle or a library hidden in a
function is still there. What only a type checker reads (`if TYPE_CHECKING:`) is no import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = ROOT / "bridge"

# Libraries that only some packages of bridge/ may import: the library's top-level name → the
# packages (or modules) allowed to import it.
CONFINED = {
    "aiomqtt": ("bridge.ingest",),
    "paho": ("bridge.ingest",),
    # The database drivers: only the store talks to the database.
    "aiosqlite": ("bridge.store",),
    "sqlite3": ("bridge.store",),
    "psycopg": ("bridge.store.postgres",),
    "psycopg_pool": ("bridge.store.postgres",),
}
# aiohttp's client (sessions, requests, its errors): only the vendors and the one exchange.
# Its server (`aiohttp.web`) serves the status page and the vendor simulators.
AIOHTTP_CLIENT_IN = ("bridge.vendors", "bridge.http")
AIOHTTP_SERVER_IN = ("bridge.ops.web", "bridge.vendors")
# Known exceptions, each with its reason.
ALLOWED = {
    # The demo plays the badge terminal itself: it publishes swipes as a separate MQTT client,
    # as a real terminal would, rather than using the bridge's ingest connection.
    ("bridge.demo.runner", "aiomqtt"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(BRIDGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under `node`, at any depth, except under `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _imports_in(other)
            continue
        yield from _imports_in(child)


def _imports_in(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    yield from _imports(node)


def _imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The absolute names `module` imports: for `from a.b import c`, `a.b.c` when that is a
    module of ours, else `a.b`."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative: resolved against the importing package
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            full = f"{base}.{alias.name}"
            names.add(full if full in known else base)
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imported(name, path, known) for name, path in modules.items()}


def _inside(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def test_the_walk_sees_every_kind_of_import() -> None:
    """The checks below are only as good as the walk: it finds imports in functions, skips
    TYPE_CHECKING blocks, and sees what the events <-> formats cycle was hidden behind."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import a.b\n"
        "if TYPE_CHECKING:\n"
        "    import hidden_from_runtime\n"
        "def f():\n"
        "    from c import d\n"
        "    class K:\n"
        "        def g(self):\n"
        "            import e\n"
    )
    found = {
        alias.name if isinstance(node, ast.Import) else node.module
        for node in _imports(ast.parse(source))
        for alias in node.names
    }
    assert found == {"typing", "a.b", "c", "e"}


@pytest.mark.parametrize("library", sorted(CONFINED))
def test_library_is_imported_only_where_it_belongs(library: str) -> None:
    allowed_in = CONFINED[library]
    found = {
        module
        for module, names in _graph().items()
        if any(name == library or name.startswith(f"{library}.") for name in names)
    }
    assert found, f"no module imports {library}: the check looks in the wrong place"
    outside = {
        module
        for module in found
        if not _inside(module, allowed_in) and (module, library) not in ALLOWED
    }
    assert not outside, f"{library} imported outside {', '.join(allowed_in)}: {sorted(outside)}"
    unused = {(m, lib) for m, lib in ALLOWED if lib == library and m not in found}
    assert not unused, f"allowances no longer needed (remove them): {sorted(unused)}"


def _aiohttp_uses(path: Path) -> set[str]:
    """'client' for `import aiohttp` or `from aiohttp import <anything but web>`; 'server' for
    `from aiohttp import web` or `import aiohttp.web`."""
    uses = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "aiohttp":
                    uses.add("client")
                elif alias.name.startswith("aiohttp.web"):
                    uses.add("server")
                elif alias.name.startswith("aiohttp."):
                    uses.add("client")
        elif node.module == "aiohttp":
            uses.update("server" if alias.name == "web" else "client" for alias in node.names)
        elif node.module and node.module.startswith("aiohttp."):
            uses.add("server" if node.module.startswith("aiohttp.web") else "client")
    return uses


def test_aiohttps_client_only_in_the_vendors_and_the_one_exchange() -> None:
    uses = {module: _aiohttp_uses(path) for module, path in _modules().items()}
    client = {m for m, u in uses.items() if "client" in u}
    server = {m for m, u in uses.items() if "server" in u}
    assert "bridge.http" in client, "the check looks in the wrong place"
    assert "bridge.ops.web" in server, "the check looks in the wrong place"
    assert not {m for m in client if not _inside(m, AIOHTTP_CLIENT_IN)}
    assert not {m for m in server if not _inside(m, AIOHTTP_SERVER_IN)}


def test_the_aiohttp_check_tells_client_from_server(tmp_path: Path) -> None:
    cases = {
        "import aiohttp\n": {"client"},
        "from aiohttp import web\n": {"server"},
        "from aiohttp import ClientSession, web\n": {"client", "server"},
        "def f():\n    import aiohttp.web\n": {"server"},
    }
    for source, expected in cases.items():
        path = tmp_path / "m.py"
        path.write_text(source)
        assert _aiohttp_uses(path) == expected, source


# aiomqtt's private attributes the adapter reaches: its paho client, its socket, its futures.
INTERNALS = frozenset({"_client", "_sock", "_disconnected", "_connected", "_misc_loop"})


def _reaches_internals(path: Path) -> set[str]:
    """`x._client` and the like on anything but the module's own `self`."""
    return {
        f"line {node.lineno}: .{node.attr}"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if isinstance(node, ast.Attribute)
        and node.attr in INTERNALS
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    }


def test_paho_and_aiomqtt_internals_stay_in_one_adapter() -> None:
    """Within ingest, only bridge.ingest.mqtt imports paho itself or reaches into aiomqtt."""
    graph = _graph()
    paho_users = {m for m, names in graph.items() if any(n.split(".")[0] == "paho" for n in names)}
    assert paho_users == {"bridge.ingest.mqtt"}
    reaching = {
        module: found
        for module, path in _modules().items()
        if module != "bridge.ingest.mqtt" and (found := _reaches_internals(path))
    }
    assert not reaching, f"aiomqtt's internals reached outside ingest/mqtt.py: {reaching}"
    assert _reaches_internals(_modules()["bridge.ingest.mqtt"]), "the check sees nothing"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among our own modules, or None."""
    ours = {name: {n for n in names if n in graph and n != name} for name, names in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(ours[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        state[module] = 2
        path.pop()
        return None

    for module in sorted(ours):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def test_no_import_cycles_in_bridge() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]


IMPORT_EACH_FIRST = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "bridge" or m.startswith("bridge.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as err:
        failed.append(f"{name}: {err}")
print("\\n".join(failed))
"""


@pytest.mark.slow
def test_every_module_imports_on_its_own() -> None:
    """Each module imported first, in a fresh set of modules: an import cycle through a
    package's __init__ (which the graph above does not see) fails here, whichever module a
    command or a test happens to import first."""
    import subprocess
    import sys

    names = sorted(name for name in _modules() if name != "bridge.__main__")
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_FIRST, *names],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", done.stdout
