"""Executes notebooks top to bottom in a fresh kernel and stores their outputs in place.

  .venv/bin/python scripts/execute_notebook.py notebooks/NAME.ipynb [...] [--timeout SECONDS]

Each notebook runs from its own folder (notebooks/), as Jupyter runs it, in a kernel of this Python (ipykernel
in the same environment); environment variables pass to the kernel (e.g. SEGJAX_NOTEBOOK_STEPS). A failing cell
stops the run with its traceback and leaves the file unchanged.
"""
import argparse
import os
import time

import nbclient
import nbformat


def execute(path, timeout=None):
  """Runs the notebook at `path` in a fresh kernel; returns the executed notebook (the file is not written)."""
  notebook = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                   resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
  client.execute()
  return notebook


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("notebooks", nargs="+")
  parser.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: none)")
  args = parser.parse_args()
  for path in args.notebooks:
    start = time.time()
    notebook = execute(path, args.timeout)
    nbformat.write(notebook, path)
    print(f"{path}: executed in {time.time() - start:.0f} s, outputs stored", flush=True)


if __name__ == "__main__":
  main()
