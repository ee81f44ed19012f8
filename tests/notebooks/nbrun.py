"""Executes a notebook headlessly in a real Jupyter kernel (nbclient + ipykernel), as "Run all" does.

``execute_notebook(path, delta_root)`` runs every cell in order, in the notebook's folder, with
``TRAFFICSTREAM_DELTA_ROOT=delta_root`` in the kernel's environment, and raises ``CellExecutionError`` (naming
the cell and the traceback) on the first cell that fails. The notebook file is not modified. The kernel is
this interpreter (``sys.executable``), whatever kernelspecs the machine has installed.

Use from another test folder: ``sys.path.insert(0, str(PROJECT_ROOT / "tests" / "notebooks"))`` then
``from nbrun import execute_notebook``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

__all__ = ["CellExecutionError", "execute_notebook", "figures", "output_text", "outputs"]

PLOTLY_MIME = "application/vnd.plotly.v1+json"


class _ThisInterpreter(KernelSpecManager):
    """Every kernel name resolves to an ipykernel running on this Python (the project's virtualenv)."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name="Python 3",
            language="python",
            env={},
        )


def execute_notebook(
    path: str | Path, delta_root: str | Path, *, timeout: int = 180, env: Mapping[str, str] | None = None
) -> nbformat.NotebookNode:
    """Runs every cell of the notebook at ``path`` on the tables under ``delta_root``; returns the executed
    notebook (outputs included). Raises ``CellExecutionError`` on any cell error, ``TimeoutError`` when one
    cell runs longer than ``timeout`` seconds. ``env`` adds or replaces variables of the kernel's environment.
    """
    path = Path(path).resolve()
    nb = nbformat.read(path, as_version=4)
    kernel_env = {**os.environ, "TRAFFICSTREAM_DELTA_ROOT": str(delta_root), **(env or {})}
    kernel_env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets a debugger warning on frozen modules
    km = KernelManager(kernel_name="python3", kernel_spec_manager=_ThisInterpreter())
    client = NotebookClient(
        nb,
        km=km,
        timeout=timeout,
        allow_errors=False,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=kernel_env)
    return nb


def outputs(nb: nbformat.NotebookNode) -> Iterator[nbformat.NotebookNode]:
    """Every output of every code cell, in order."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


def output_text(nb: nbformat.NotebookNode) -> str:
    """Streams, plain-text, markdown and HTML outputs joined (for assertions on what the notebook showed)."""
    parts: list[str] = []
    for out in outputs(nb):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("display_data", "execute_result"):
            for mime in ("text/plain", "text/markdown", "text/html"):
                if mime in out.data:
                    parts.append(out.data[mime])
    return "\n".join(parts)


def figures(nb: nbformat.NotebookNode) -> list[dict]:
    """The Plotly figures the notebook displayed."""
    return [
        out.data[PLOTLY_MIME]
        for out in outputs(nb)
        if out.output_type in ("display_data", "execute_result") and PLOTLY_MIME in out.data
    ]
