"""What a Python file imports, read from its syntax tree (for the layering tests)."""

from __future__ import annotations

import ast
from pathlib import Path


def imports_of(path: Path, package_root: Path) -> set[str]:
    """Every module (and `module.name`) the file imports; relative imports are resolved
    against the file's package under `package_root` (the folder holding the top package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level and path.is_relative_to(package_root):
                base = list(path.parent.relative_to(package_root).parts)
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([module] if module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names
