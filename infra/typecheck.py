"""Type check the source packages with mypy, as ``make lint`` does.

    python -m trafficstream.infra.typecheck [MYPY_ARGS...]

The repository maps its top-level folders into the one import package with setuptools ``package-dir``
(``trafficstream.models`` <- ``models/``, see pyproject.toml), which mypy cannot follow. This builds the
import tree mypy needs, ``var/typecheck/trafficstream/``: a symlink to every entry of ``trafficstream/`` and
one per mapped folder (``models -> ../../../models``), then runs ``mypy -p trafficstream`` from the
repository root, where ``[tool.mypy] mypy_path = "var/typecheck"`` points mypy at that tree. Errors are
reported against the tree's paths (``var/typecheck/trafficstream/models/x.py`` is ``models/x.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # mypy depends on tomli on Python 3.10
    import tomli as tomllib

PACKAGE = "trafficstream"
VIEW = Path("var") / "typecheck"


def find_root(start: Path | None = None) -> Path:
    """The source checkout holding this module (the folder with pyproject.toml and ``trafficstream/``)."""
    here = (start or Path(__file__)).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / PACKAGE).is_dir():
            return folder
    raise SystemExit(f"{here}: not in a source checkout (no pyproject.toml next to {PACKAGE}/)")


def package_dirs(root: Path) -> dict[str, str]:
    """Subpackage name -> folder, from ``[tool.setuptools.package-dir]`` (``{"models": "models", ...}``)."""
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    out = {}
    for name, folder in mapping.items():
        head, _, sub = name.partition(".")
        if head != PACKAGE or not sub or "." in sub:
            raise SystemExit(f"package-dir {name!r}: expected {PACKAGE}.<name>")
        out[sub] = folder
    return out


def build_view(root: Path) -> Path:
    """(Re)build ``var/typecheck/trafficstream/`` with relative symlinks; returns ``var/typecheck``."""
    view = root / VIEW
    pkg = view / PACKAGE
    shutil.rmtree(view, ignore_errors=True)
    pkg.mkdir(parents=True)
    links = {p.name: p for p in sorted((root / PACKAGE).iterdir()) if p.name != "__pycache__"}
    for sub, folder in package_dirs(root).items():
        if sub in links:
            raise SystemExit(f"{PACKAGE}/{sub} exists and is also mapped to {folder}/")
        links[sub] = root / folder
    for name, target in links.items():
        (pkg / name).symlink_to(os.path.relpath(target, pkg), target_is_directory=target.is_dir())
    return view


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    root = find_root()
    build_view(root)
    return subprocess.call([sys.executable, "-m", "mypy", "-p", PACKAGE, *args], cwd=root)


if __name__ == "__main__":
    raise SystemExit(main())
