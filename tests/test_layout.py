"""The import rules of the layout (WORKSPACE.md): walk the AST of every module.

cropcontracts is the bottom layer and imports no stage; prep and jaxcrop never
import each other; tfds_builder imports the bottom layer only (its demo config
may call prep.demo's one entry point); benchmarks import any package but tests;
no test imports another test module. cropcontracts.atomic is the only
tmp+rename writer.
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
    "benchmarks": {"tests"},          # they run on machines that have no tests/ (a wheel)
}
ALLOWED = {("tfds_builder", "prep.demo")}   # the demo config's one entry point


def imports_of(path: pathlib.Path, root: pathlib.Path = REPO) -> list[str]:
  """Every module name imported by the file (absolute imports; relative ones resolved
  against the file's package, its folder under `root`)."""
  tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
  package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
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


def violations(top: str, root: pathlib.Path = REPO) -> list[str]:
  """'<file> imports <module>' for each import of package `top` (under `root`) that
  FORBIDDEN forbids and ALLOWED does not allow."""
  bad = []
  for path in sorted((root / top).rglob("*.py")):
    for name in imports_of(path, root):
      if name.split(".")[0] in FORBIDDEN[top] and not any(
          top == t and (name == a or name.startswith(a + ".")) for t, a in ALLOWED):
        bad.append(f"{path.relative_to(root)} imports {name}")
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
  """On a temporary tree: the checkout is never written to."""
  (tmp_path / "jaxcrop" / "maps").mkdir(parents=True)
  (tmp_path / "jaxcrop" / "ok.py").write_text("from cropcontracts import zone\nimport numpy\n")
  (tmp_path / "jaxcrop" / "maps" / "probe.py").write_text(
      "from prep import zones\nfrom ..tests_like import x\n")
  (tmp_path / "benchmarks").mkdir()
  (tmp_path / "benchmarks" / "probe.py").write_text(
      "from prep.demo import zonefolders\nimport jaxcrop.train\nfrom tests import fixtures\n")
  assert violations("jaxcrop", tmp_path) == ["jaxcrop/maps/probe.py imports prep",
                                             "jaxcrop/maps/probe.py imports prep.zones"]
  assert imports_of(tmp_path / "jaxcrop" / "maps" / "probe.py", tmp_path)[2:] == [
      "jaxcrop.tests_like", "jaxcrop.tests_like.x"]             # relative, resolved
  assert violations("benchmarks", tmp_path) == ["benchmarks/probe.py imports tests",
                                                "benchmarks/probe.py imports tests.fixtures"]


def test_no_sys_path_patches():
  bad = [str(p.relative_to(REPO)) for top in (*STAGES, "cropcontracts", "configs", "tests")
         if (REPO / top).is_dir() for p in (REPO / top).rglob("*.py")
         if "sys.path.insert" in p.read_text(encoding="utf-8") and p.name != "test_layout.py"]
  assert bad == []


PRODUCT = ("cropcontracts", "prep", "tfds_builder", "jaxcrop", "configs")
TMP_MARKERS = (".tmp", ".partial")


def private_tmp_writers(root: pathlib.Path = REPO) -> list[str]:
  """Product modules other than cropcontracts/atomic.py that write under a temporary
  name and rename: a string holding `.tmp` or `.partial`, and a rename, that is
  `os.replace(a, b)` / `os.rename(a, b)` or `x.replace(p)` / `x.rename(p)` with ONE
  positional argument (str.replace takes two, dataclass `.replace(**kw)` none)."""
  bad = []
  for top in PRODUCT:
    for path in sorted((root / top).rglob("*.py")):
      if path.relative_to(root).as_posix() == "cropcontracts/atomic.py":
        continue
      tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
      marked = any(isinstance(n, ast.Constant) and isinstance(n.value, str)
                   and any(m in n.value for m in TMP_MARKERS) for n in ast.walk(tree))
      renames = any(
          isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
          and n.func.attr in ("replace", "rename")
          and (len(n.args) == 1 or (isinstance(n.func.value, ast.Name)
                                    and n.func.value.id == "os" and len(n.args) == 2))
          for n in ast.walk(tree))
      if marked and renames:
        bad.append(path.relative_to(root).as_posix())
  return bad


def test_atomic_is_the_only_tmp_rename_writer():
  assert private_tmp_writers() == []


def test_the_tmp_writer_rule_catches_one(tmp_path):
  """On a temporary tree: each kind of rename next to a temporary name, and what is
  not one (str.replace, dataclass replace, a rename without a temporary name)."""
  files = {
      "jaxcrop/a.py": 'tmp = p.with_suffix(".tmp")\ntmp.write_text("x")\ntmp.replace(p)\n',
      "prep/b.py": 'import os\nos.rename(f"{p}.partial", p)\n',
      "jaxcrop/c.py": 'import os\nos.replace(name + ".tmp", name)\n',
      "jaxcrop/d.py": 'k = key.replace("__", ".")\ns = state.replace(step=1)\nx = ".tmp"\n',
      "prep/e.py": 'img = img.rename("band")\n',
      "cropcontracts/atomic.py": 'import os\nos.replace(p + ".partial", p)\n',
  }
  for name, text in files.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
  for top in PRODUCT:
    (tmp_path / top).mkdir(exist_ok=True)
  assert private_tmp_writers(tmp_path) == ["prep/b.py", "jaxcrop/a.py", "jaxcrop/c.py"]


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
