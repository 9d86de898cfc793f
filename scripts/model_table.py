"""The README's model table, generated from the docstrings of the paper configs in experiments/.

  python scripts/model_table.py            # prints the table
  python scripts/model_table.py --write    # replaces the table between the markers in README.md

A paper config's docstring opens with "MODEL (PAPER ...)", holds the command (`python -m segjax.main ...`), a
sentence starting "Published" or "Paper row" and one starting "Needs" (the data and hardware it takes;
tests/test_docs.py checks the README is current).
"""
import argparse
import ast
import glob
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- model table: scripts/model_table.py --write -->", "<!-- end of model table -->"
_SENTENCE_END = re.compile(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)\.\s+(?=[A-Z(])")


def sentence(text: str, start: int) -> str:
  """The sentence of `text` starting at `start`."""
  end = _SENTENCE_END.search(text, start)
  return text[start:end.start() + 1 if end else len(text)].strip()


def row(path: str) -> dict | None:
  """{"config", "model", "paper", "published", "needs", "command"} of a paper config, None for others."""
  with open(path) as f:
    doc = ast.get_docstring(ast.parse(f.read())) or ""
  text = " ".join(doc.split())
  published = re.search(r"\b(Published|Paper rows?)\b", text)
  if published is None:
    return None
  first = " ".join(doc.split("\n\n")[0].split()).rstrip(".")
  cite = re.search(r" \(([^()]*(?:\d{4}|et al)[^()]*)\)", first)  # the first parenthesis citing the paper
  model, paper = (first[:cite.start()] + first[cite.end():], cite.group(1)) if cite else (first, "")
  name = os.path.basename(path)
  commands = [c.strip() for c in doc.replace("\\\n", " ").splitlines() if "python -m segjax.main" in c]
  command = " ".join(next((c for c in commands if name in c), commands[0] if commands else "").split())
  needs = re.search(r"\bNeeds\b", text)
  return {"config": name, "model": model.rstrip(",. "), "paper": paper,
          "published": sentence(text, published.start()),
          "needs": "" if needs is None else sentence(text, needs.start()),
          "command": command.rstrip("\\ ")}


def table() -> str:
  rows = [r for r in map(row, sorted(glob.glob(os.path.join(REPO, "experiments", "*.py")))) if r]
  lines = ["| config | model | paper | published | needs | command |", "| --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    cells = [f"[{r['config']}](experiments/{r['config']})", r["model"], r["paper"], r["published"], r["needs"],
             f"`{r['command']}`"]
    lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
  return "\n".join(lines)


def readme_with_table(readme: str) -> str:
  head, begin, rest = readme.partition(BEGIN)
  _, end, tail = rest.partition(END)
  if not begin or not end:
    raise ValueError(f"README.md: the markers {BEGIN!r} and {END!r} are missing")
  return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--write", action="store_true", help="update README.md in place")
  args = parser.parse_args()
  if not args.write:
    print(table())
    return
  path = os.path.join(REPO, "README.md")
  with open(path) as f:
    readme = f.read()
  with open(path, "w") as f:
    f.write(readme_with_table(readme))


if __name__ == "__main__":
  main()
