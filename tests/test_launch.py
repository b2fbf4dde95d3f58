"""launch.sh: syntax, fail-fast checks and the TPU commands it would run."""
import hashlib
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import tarfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TPU_ENV = {"JAXCROP_GCP_PROJECT": "proj", "JAXCROP_TPU_ZONE": "us-central2-b",
           "JAXCROP_TPU_NAME": "jc", "JAXCROP_TPU_TYPE": "v4-8",
           "JAXCROP_BUCKET": "gs://bkt", "JAXCROP_RUN": "r1"}


def _run(*args, env=None, root=ROOT):
  e = {k: v for k, v in os.environ.items() if not k.startswith("JAXCROP_")}
  e.update(env or {})
  r = subprocess.run(["bash", str(root / "launch.sh"), *args], env=e,
                     capture_output=True, text=True, timeout=60)
  # A dry run of `tpu setup` keeps its tarball, to look at: read its names, remove it.
  m = re.search(r"setup ships .*: (\S+)$", r.stderr, re.M)
  r.bundle, r.bundle_names = (pathlib.Path(m.group(1)), set()) if m else (None, None)
  if m:
    with tarfile.open(r.bundle) as t:
      r.bundle_names = set(t.getnames())
    shutil.rmtree(r.bundle.parent)
  return r


def _remote(stdout):
  """The --command= of each `tpu-vm ssh` line a dry run printed (shell-quoted by printf %q)."""
  cmds = []
  for line in stdout.splitlines():
    words = shlex.split(line)
    if words[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] and words[4] == "ssh":
      cmds += [w.split("=", 1)[1] for w in words if w.startswith("--command=")]
  return cmds


def _bash_n(cmd):
  return subprocess.run(["bash", "-n"], input=cmd, text=True).returncode == 0


FAKE_GCLOUD = """#!/usr/bin/env bash
# Records each call; `describe` answers $FAKE_TPU_STATE, NOT_FOUND when empty, or fails.
echo "$*" >> "$FAKE_GCLOUD_LOG"
if [ "$4" = describe ]; then
  case "$FAKE_TPU_STATE" in
    "") echo "ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: Resource 'jc' was not found" >&2; exit 1;;
    DENIED) echo "ERROR: (gcloud.compute.tpus.tpu-vm.describe) PERMISSION_DENIED: no access" >&2; exit 1;;
    *) echo "$FAKE_TPU_STATE";;
  esac
fi
"""


def _fake_gcloud(tmp_path, state):
  """Runs `tpu create` against a fake gcloud; returns (result, the gcloud verbs it called)."""
  (tmp_path / "bin").mkdir(exist_ok=True)
  gcloud = tmp_path / "bin" / "gcloud"
  gcloud.write_text(FAKE_GCLOUD)
  gcloud.chmod(0o755)
  log = tmp_path / "gcloud.log"
  log.unlink(missing_ok=True)
  r = _run("tpu", "create", env=dict(TPU_ENV, FAKE_TPU_STATE=state, FAKE_GCLOUD_LOG=str(log),
                                     PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}"))
  calls = log.read_text().splitlines() if log.exists() else []
  return r, [c.split()[3] for c in calls]


def test_syntax():
  assert subprocess.run(["bash", "-n", str(ROOT / "launch.sh")]).returncode == 0


def test_help_and_unknown_command():
  r = _run("--help")
  assert r.returncode == 0 and "./launch.sh demo [OUT]" in r.stdout
  assert "set -euo" not in r.stdout
  r = _run("fly")
  assert r.returncode == 2 and r.stdout == ""
  assert r.stderr.splitlines() == [
      "launch.sh: error: unknown command 'fly' (demo | test | train | tpu; ./launch.sh --help)"]
  r = _run("tpu", "fly")                  # checked before the variables
  assert r.returncode == 2 and "unknown tpu action 'fly'" in r.stderr
  r = _run("tpu")
  assert r.returncode == 2 and "tpu needs an action" in r.stderr


def test_demo_arguments_are_checked_before_anything_runs(tmp_path):
  # Neither a set-up nor a demo run: these return before setup_venv.
  r = _run("demo", "--help")
  assert r.returncode == 0 and "./launch.sh demo [OUT]" in r.stdout
  r = _run("demo", "--fast")
  assert r.returncode == 2 and "demo takes no option '--fast'" in r.stderr
  r = _run("demo", str(tmp_path / "a"), str(tmp_path / "b"))
  assert r.returncode == 2 and "one output folder at most" in r.stderr
  assert list(tmp_path.iterdir()) == []


def test_train_runs_jaxcrop_train_in_the_venv():
  venv = ROOT / ".venv"
  # launch.sh's stamp: `cat requirements.txt pyproject.toml | sha256sum`.
  want = hashlib.sha256((ROOT / "requirements.txt").read_bytes() +
                        (ROOT / "pyproject.toml").read_bytes()).hexdigest()
  stamp = venv / ".requirements.sha256"
  if not (venv / "bin" / "python").exists() or not stamp.exists() or (
      stamp.read_text().strip() != want):
    pytest.skip("no up-to-date .venv here (./launch.sh test makes one); not installing one")
  r = _run("train", "--help")
  assert r.returncode == 0, r.stderr
  assert "python -m jaxcrop.train --config" in r.stdout and "--workdir" in r.stdout
  assert "installing" not in r.stderr and "creating" not in r.stderr


def test_the_editable_install_is_a_path_entry_to_the_checkout_and_warns_nothing(tmp_path):
  """launch.sh's `pip install -e .`: setuptools' editable hook (PEP 660) makes a
  wheel whose .pth puts the checkout itself on sys.path, so a checkout's own code
  comes first, and it warns nothing (the compat mode that did the same warns
  that it is deprecated). Run on a copy of the project's files, as pip would."""
  import sys
  import tomllib
  import zipfile
  assert "editable_mode" not in (ROOT / "launch.sh").read_text(), "launch.sh picks a mode again"
  copy = tmp_path / "checkout"
  copy.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(ROOT / name, copy / name)
  find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
  for package in find["find"]["include"]:
    shutil.copytree(ROOT / package.rstrip("*"), copy / package.rstrip("*"),
                    ignore=shutil.ignore_patterns("__pycache__"))
  r = subprocess.run([sys.executable, "-W", "default", "-c",
                      "import sys; from setuptools import build_meta\n"
                      "print(build_meta.build_editable(sys.argv[1]))", tmp_path / "wheel"],
                     cwd=copy, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]
  # (This venv's setuptools is older than the one pip builds with, and says more: what
  # the install itself would print is its deprecation warnings.)
  assert "DeprecationWarning" not in r.stderr, r.stderr[-3000:]
  with zipfile.ZipFile(tmp_path / "wheel" / r.stdout.split()[-1]) as wheel:
    [pth] = [n for n in wheel.namelist() if n.endswith(".pth")]
    assert wheel.read(pth).decode().split() == [str(copy)]


def test_tpu_fails_fast_naming_missing_variables():
  r = _run("tpu", "create", "--dry-run", env={"JAXCROP_GCP_PROJECT": "p"})
  assert r.returncode == 2
  assert "JAXCROP_TPU_ZONE JAXCROP_TPU_NAME JAXCROP_TPU_TYPE JAXCROP_BUCKET" in r.stderr
  r = _run("tpu", "create", "--dry-run", env=dict(TPU_ENV, JAXCROP_BUCKET="/tmp/x"))
  assert r.returncode == 2 and "must start with gs://" in r.stderr


def test_tpu_without_gcloud_says_how_to_get_it(tmp_path):
  # A PATH with every tool of this machine but gcloud.
  bin_ = tmp_path / "bin"
  bin_.mkdir()
  for d in os.environ["PATH"].split(os.pathsep):
    for tool in pathlib.Path(d).glob("*") if os.path.isdir(d) else ():
      if tool.name != "gcloud" and not (bin_ / tool.name).exists():
        (bin_ / tool.name).symlink_to(tool)
  env = dict(TPU_ENV, PATH=str(bin_))
  r = _run("tpu", "create", env=env)
  assert r.returncode == 2 and "gcloud not found" in r.stderr
  r = _run("tpu", "create", "--dry-run", env=env)    # a dry run needs no gcloud
  assert r.returncode == 0 and "tpu-vm create jc" in r.stdout


def test_tpu_dry_run_prints_the_gcloud_commands():
  r = _run("tpu", "create", "--dry-run", env=TPU_ENV)
  assert r.returncode == 0, r.stderr
  assert ("gcloud compute tpus tpu-vm create jc --project=proj --zone=us-central2-b "
          "--accelerator-type=v4-8 --version=tpu-ubuntu2204-base") in r.stdout
  r = _run("tpu", "setup", "--dry-run", env=TPU_ENV)
  assert "--worker=all" in r.stdout
  r = _run("tpu", "train", "--dry-run", "--", "--config", "configs/hybrid.py",
           env=TPU_ENV)
  assert "--worker=all" in r.stdout
  assert "--multihost" in r.stdout and "gs://bkt/runs/r1" in r.stdout
  # --config first: ml_collections refuses an override given before the config file.
  out = r.stdout.replace("\\ ", " ")          # the dry run prints shell-quoted words
  assert out.index("--config configs/hybrid.py") < out.index(
      "--config.data.data_dir=gs://bkt/tfds")
  r = _run("tpu", "train", "--dry-run", "--", "--config.optimizer.lr=3e-4", env=TPU_ENV)
  out = r.stdout.replace("\\ ", " ")
  assert out.index("--config configs/hybrid.py") < out.index("--config.optimizer.lr=3e-4")
  r = _run("tpu", "delete", "--dry-run", env=TPU_ENV)
  assert "tpu-vm delete jc" in r.stdout


def test_tpu_setup_makes_a_python_311_venv_with_uv():
  # The default image's python3 is 3.10; requirements.txt needs >= 3.11.
  jax = next(l for l in (ROOT / "requirements.txt").read_text().splitlines()
             if l.startswith("jax==")).removeprefix("jax==")
  r = _run("tpu", "setup", "--dry-run", env=TPU_ENV)
  assert r.returncode == 0, r.stderr
  setup = _remote(r.stdout)[-1]
  assert _bash_n(setup), setup
  assert "python3 -m venv" not in setup
  assert "python3 -m pip install -q --user uv" in setup
  assert "uv venv -q --python 3.11 .venv" in setup
  assert ('uv pip install -q --python .venv/bin/python -r requirements.txt '
          f'"jax[tpu]=={jax}"') in setup
  assert setup.index("uv venv") < setup.index("uv pip install")
  r = _run("tpu", "setup", "--dry-run", env=dict(TPU_ENV, JAXCROP_TPU_PYTHON="3.12"))
  assert "uv venv -q --python 3.12 .venv" in _remote(r.stdout)[-1]


def test_tpu_train_quotes_each_argument_for_the_remote_shell():
  r = _run("tpu", "train", "--dry-run", "--", "--config.model.unet.widths=(32,64)",
           "--config.note=a b;c", env=dict(TPU_ENV, JAXCROP_BUCKET="gs://bkt/my dir"))
  assert r.returncode == 0, r.stderr
  (train,) = _remote(r.stdout)
  assert _bash_n(train), train
  # The remote shell sees each argument as one word, unchanged.
  words = shlex.split(train.split("jaxcrop.train", 1)[1].split(">", 1)[0])
  assert words[:2] == ["--config", "configs/hybrid.py"]
  assert "--config.model.unet.widths=(32,64)" in words
  assert "--config.note=a b;c" in words
  assert "--config.data.data_dir=gs://bkt/my dir/tfds" in words
  assert words[words.index("--workdir") + 1] == "gs://bkt/my dir/runs/r1"


def test_tpu_create_dry_run_prints_describe_then_create():
  r = _run("tpu", "create", "--dry-run", env=TPU_ENV)
  assert r.returncode == 0, r.stderr
  describe, create = [shlex.split(l) for l in r.stdout.splitlines()]
  assert describe[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "jc"]
  assert "--format=value(state)" in describe
  assert create[4:6] == ["create", "jc"] and "--accelerator-type=v4-8" in create
  assert "state unknown" in r.stderr


def test_tpu_create_reuses_starts_or_recreates_after_the_state(tmp_path):
  assert _fake_gcloud(tmp_path, "")[1] == ["describe", "create"]
  r, calls = _fake_gcloud(tmp_path, "READY")
  assert r.returncode == 0 and calls == ["describe"] and "reusing" in r.stderr
  assert _fake_gcloud(tmp_path, "STOPPED")[1] == ["describe", "start"]
  assert _fake_gcloud(tmp_path, "PREEMPTED")[1] == ["describe", "delete", "create"]
  r, calls = _fake_gcloud(tmp_path, "CREATING")
  assert r.returncode == 2 and calls == ["describe"] and "is CREATING" in r.stderr
  # Not a missing VM (no access, no network): say why, create nothing.
  r, calls = _fake_gcloud(tmp_path, "DENIED")
  assert r.returncode == 2 and calls == ["describe"] and "PERMISSION_DENIED" in r.stderr


def test_tpu_train_default_run_is_stable_so_a_rerun_resumes():
  env = {k: v for k, v in TPU_ENV.items() if k != "JAXCROP_RUN"}
  r1 = _run("tpu", "train", "--dry-run", env=env)
  r2 = _run("tpu", "train", "--dry-run", env=env)
  assert r1.returncode == 0, r1.stderr
  assert r1.stdout == r2.stdout and "--workdir gs://bkt/runs/jc " in _remote(r1.stdout)[0]
  assert "workdir gs://bkt/runs/jc" in r1.stderr
  r = _run("tpu", "train", "--dry-run", env=dict(env, JAXCROP_RUN="a/b"))
  assert r.returncode == 2 and "JAXCROP_RUN" in r.stderr


def test_tpu_setup_ships_only_the_project_files(tmp_path):
  repo = tmp_path / "repo"
  repo.mkdir()
  for f in ("launch.sh", "requirements.txt"):
    shutil.copy(ROOT / f, repo / f)
  (repo / ".gitignore").write_text(".venv/\n/demo_run/\n__pycache__/\n")
  for f in (".venv/lib/big.so", "demo_run/maps/x.tif", "pkg/__pycache__/a.pyc",
            "pkg/a.py", "pkg/new.py", "gone.py"):
    (repo / f).parent.mkdir(parents=True, exist_ok=True)
    (repo / f).write_text("x")
  env = dict(TPU_ENV, GIT_CEILING_DIRECTORIES=str(tmp_path))
  git = ["git", "-C", str(repo)]
  subprocess.run(git + ["init", "-q"], check=True, env=env)
  subprocess.run(git + ["add", "launch.sh", "requirements.txt", ".gitignore", "pkg/a.py",
                        "gone.py"], check=True, env=env)
  (repo / "gone.py").unlink()              # tracked, deleted from the work tree
  r = _run("tpu", "setup", "--dry-run", env=env, root=repo)
  assert r.returncode == 0, r.stderr
  scp = shlex.split(next(l for l in r.stdout.splitlines() if " scp " in l))
  assert "--recurse" not in scp and str(r.bundle) in scp and "jc:jaxcrop.tar.gz" in scp
  assert r.bundle_names == {"launch.sh", "requirements.txt", ".gitignore", "pkg/a.py",
                              "pkg/new.py"}
  unpack, setup = _remote(r.stdout)
  assert _bash_n(unpack) and "tar -xzf ~/jaxcrop.tar.gz -C ~/jaxcrop" in unpack
  assert unpack.index("rm -rf ~/jaxcrop") < unpack.index("tar -xzf")
  assert setup.startswith("cd ~/jaxcrop && ")
  # Not a git checkout: no guess at what to ship.
  shutil.rmtree(repo / ".git")
  r = _run("tpu", "setup", "--dry-run", env=env, root=repo)
  assert r.returncode == 2 and "not a git checkout" in r.stderr and r.stdout == ""
  # A git URL instead: cloned on the workers, nothing shipped from here.
  r = _run("tpu", "setup", "--dry-run", env=dict(env, JAXCROP_REPO_URL="https://x/y.git"),
           root=repo)
  assert r.returncode == 0 and r.bundle is None
  assert "git clone --depth 1 https://x/y.git ~/jaxcrop" in _remote(r.stdout)[0]


def test_tpu_predict_runs_on_every_worker_resumable():
  r = _run("tpu", "predict", "--dry-run", "--", "--zone", "/data/zones", "--out",
           "gs://bkt/maps", "--zones-csv", "zones_fr.csv", env=TPU_ENV)
  assert r.returncode == 0, r.stderr
  (cmd,) = _remote(r.stdout)
  assert _bash_n(cmd), cmd
  assert "--worker=all" in r.stdout
  words = shlex.split(cmd.split("jaxcrop.predict", 1)[1].split(">", 1)[0])
  assert words == ["--workdir", "gs://bkt/runs/r1", "--resume", "--zone", "/data/zones",
                   "--out", "gs://bkt/maps", "--zones-csv", "zones_fr.csv"]
  assert "~/predict-r1.log" in cmd
