"""Every `module.NAME` read of one of this project's modules names something that module defines or imports.

pyflakes checks the names a module uses itself, not the attributes other modules read from it: an import removed as
unused from `accounts/auth.py` while `accounts/api/authentication.py` still read `auth.WWW_AUTHENTICATE` turned
every unauthenticated /api request into a 500. This reads the source (no imports, nothing run) for such reads:
`import a.b as m`, `from a import b` (b a module) and `import a.b` (then `a.b.NAME`), each followed by NAME.
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("accounts", "billing", "config", "core", "inference", "tests", "bench")


def sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def module_file(dotted: str) -> Path | None:
    base = ROOT.joinpath(*dotted.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _bound(node: ast.AST) -> set[str]:
    """Names a statement binds at module level (inside if/try/with/for blocks too)."""
    names: set[str] = set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        names.add(node.name)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            names.add(alias.asname or alias.name.split(".")[0])
    elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor, ast.With,
                           ast.AsyncWith)):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [item.optional_vars for item in node.items if item.optional_vars] if isinstance(
                node, (ast.With, ast.AsyncWith)) else [node.target]
        for target in targets:
            names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.stmt) and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                   ast.ClassDef)):
            names |= _bound(child)
    return names


@cache
def defined(path: Path) -> frozenset[str] | None:
    """What a module defines at its top level; None when it resolves names at run time (a module __getattr__,
    a star import, or `global` in a function)."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            return None
        if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names):
            return None
        names |= _bound(node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            names.update(node.names)
    if path.name == "__init__.py":  # a package's submodules are its attributes once imported
        names.update(p.stem for p in path.parent.glob("*.py"))
        names.update(p.name for p in path.parent.iterdir() if (p / "__init__.py").is_file())
    return frozenset(names)


def module_aliases(path: Path, tree: ast.Module) -> dict[str, str]:
    """Local name -> the project module it is bound to at the top of `path` ("a.b" for `import a.b` too)."""
    aliases: dict[str, str] = {}
    here = path.relative_to(ROOT).with_suffix("").parts
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if module_file(alias.name) is not None:
                    aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a/b/c.py and a/b/__init__.py alike: level 1 is a.b
                base = here[:len(here) - node.level]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            for alias in node.names:
                dotted = f"{origin}.{alias.name}" if origin else alias.name
                if module_file(dotted) is not None:
                    aliases[alias.asname or alias.name] = dotted
    return aliases


def dotted_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = dotted_name(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def missing_reads(path: Path, checked: list[str] | None = None) -> list[str]:
    """The bad reads in `path`; every read looked at is appended to `checked`."""
    tree = ast.parse(path.read_text(), str(path))
    aliases = module_aliases(path, tree)
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not isinstance(node.ctx, ast.Load):
            continue
        reader = dotted_name(node.value)
        module = aliases.get(reader) if reader else None
        if module is None:
            continue
        names = defined(module_file(module))
        if checked is not None:
            checked.append(f"{module}.{node.attr}")
        if names is not None and node.attr not in names:
            problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: {reader}.{node.attr} "
                            f"({module} defines no {node.attr})")
    return problems


def test_every_attribute_read_of_a_project_module_names_what_it_defines():
    files = sources()
    assert len(files) > 200  # the whole project is read
    checked: list[str] = []
    problems = [problem for path in files for problem in missing_reads(path, checked)]
    assert not problems, "\n".join(problems)
    assert len(checked) > 400  # reads were found and checked (474 when this was written)


def test_the_check_finds_a_read_of_a_name_its_module_no_longer_imports(tmp_path, monkeypatch):
    # What broke: a reader of auth.WWW_AUTHENTICATE after the import that made it an attribute was removed.
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "auth.py").write_text("from pkg.errors import OTHER\n\n\ndef check():\n    return OTHER\n")
    (tmp_path / "pkg" / "errors.py").write_text("OTHER = 1\nWWW_AUTHENTICATE = 'Bearer'\n")
    reader = tmp_path / "pkg" / "reader.py"
    reader.write_text("from pkg import auth\nimport pkg.errors\n\n\ndef header():\n"
                      "    return auth.WWW_AUTHENTICATE, pkg.errors.WWW_AUTHENTICATE, auth.check\n")
    assert missing_reads(reader) == ["pkg/reader.py:6: auth.WWW_AUTHENTICATE (pkg.auth defines no WWW_AUTHENTICATE)"]
    (tmp_path / "pkg" / "auth.py").write_text("from pkg.errors import OTHER, WWW_AUTHENTICATE  # noqa: F401\n\n\n"
                                              "def check():\n    return OTHER\n")
    defined.cache_clear()
    assert missing_reads(reader) == []
