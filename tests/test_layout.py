"""The import rules of the layout (WORKSPACE.md): walk the AST of every module.

cropcontracts is the bottom layer and imports no stage; prep and jaxcrop never
import each other; tfds_builder imports the bottom layer only (its demo config
may call prep.demo's one entry point); no test imports another test module.
"""
import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
STAGES = ("prep", "tfds_builder", "jaxcrop", "benchmarks")
# package -> top-level project packages it must not import
FORBIDDEN = {
    "cropcontracts": {"prep", "tfds_builder", "jaxcrop", "benchmarks", "configs", "tests"},
    "prep": {"jaxcrop", "tfds_builder", "benchmarks", "tests"},
    "jaxcrop": {"prep", "tfds_builder", "benchmarks", "tests"},
    "tfds_builder": {"jaxcrop", "benchmarks", "tests"},
    "configs": {"prep", "tfds_builder", "jaxcrop", "benchmarks", "tests"},
}
ALLOWED = {("tfds_builder", "prep.demo")}   # the demo config's one entry point


def imports_of(path: pathlib.Path) -> list[str]:
  """Every module name imported by the file (absolute imports; relative ones resolved
  against the file's package)."""
  tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
  package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
  names = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")[:len(package.split(".")) - node.level + 1]
        mod = ".".join(base + ([node.module] if node.module else []))
      else:
        mod = node.module or ""
      names += [mod] + [f"{mod}.{a.name}" for a in node.names]
  return names


def violations(top: str) -> list[str]:
  bad = []
  for path in sorted((REPO / top).rglob("*.py")):
    for name in imports_of(path):
      root = name.split(".")[0]
      if root in FORBIDDEN[top] and not any(
          top == t and (name == a or name.startswith(a + ".")) for t, a in ALLOWED):
        bad.append(f"{path.relative_to(REPO)} imports {name}")
  return bad


@pytest.mark.parametrize("top", sorted(FORBIDDEN))
def test_import_rules(top):
  assert (REPO / top).is_dir()
  assert violations(top) == []


def test_no_test_imports_another_test_module():
  bad = [f"{p.name} imports {n}" for p in sorted((REPO / "tests").glob("test_*.py"))
         for n in imports_of(p) if n.startswith(("tests.test_", "test_"))]
  assert bad == []


def test_the_rule_catches_a_violation(tmp_path):
  f = REPO / "jaxcrop" / "_layout_probe.py"
  f.write_text("from prep import zones\n")
  try:
    assert violations("jaxcrop") == ["jaxcrop/_layout_probe.py imports prep",
                                     "jaxcrop/_layout_probe.py imports prep.zones"]
  finally:
    f.unlink()


def test_no_sys_path_patches():
  bad = [str(p.relative_to(REPO)) for top in (*STAGES, "cropcontracts", "configs", "tests")
         if (REPO / top).is_dir() for p in (REPO / top).rglob("*.py")
         if "sys.path.insert" in p.read_text(encoding="utf-8") and p.name != "test_layout.py"]
  assert bad == []


def _normalized(name: str) -> str:
  import re
  return re.sub(r"[-_.]+", "-", name).lower()


def test_pyproject_names_every_distribution_the_code_imports():
  """`pip install -e .` from a fresh clone pulls what the code imports: every
  third-party top-level module of the packages maps (through the installed
  distributions) to a name in pyproject.toml's dependencies. torch is the
  benchmark's optional reference (requirements-bench.txt)."""
  import importlib.metadata
  import sys
  import tomllib
  declared = {_normalized(d) for d in tomllib.loads(
      (REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
  ours = {*FORBIDDEN, *STAGES, "tests"}
  modules = {n.split(".")[0] for top in (*STAGES, "cropcontracts", "configs")
             for p in (REPO / top).rglob("*.py") for n in imports_of(p) if n}
  third_party = sorted(m for m in modules - ours - {"torch"}
                       if m not in sys.stdlib_module_names and m != "__future__")
  dists = importlib.metadata.packages_distributions()
  missing = [m for m in third_party
             if not {_normalized(d) for d in dists.get(m, [m])} & declared]
  assert missing == []
