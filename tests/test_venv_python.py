"""Venvs that match the cluster: created with the cluster's Python (loaded through the module
system when there is one; the test cluster has a small ``module`` stand-in, see
tests/cluster/module_standin.py), re-created when that Python changes, shown in the dry run, and
active for shell-script entries (``bash job.sh``, ``./job.sh``) of a project with dependencies,
so ``pip install`` inside the job script installs into rv's venv (the seeds' promise).
"""
from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from rv_tui.jobs.templates import DEFAULT_MODULES
from rv_tui.workspace.deps import PYTHON_MODULE, ClusterPython, _parse_python, python_setup
from rv_tui.workspace.prepare import plan_command

sys.path.insert(0, str(Path(__file__).parent))
from test_workspace_deps import make_wheel  # noqa: E402  (the same tiny offline wheels)


# ----------------------------------------------------------------------------- unit: the shell part


def fake_lmod(tmp: Path) -> tuple[Path, Path]:
    """An init file defining ``module`` that puts a python3 of its own first on PATH."""
    bindir = tmp / "apps" / PYTHON_MODULE / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python3").symlink_to(Path(sys.executable).resolve())
    init = tmp / "init" / "bash"
    init.parent.mkdir(parents=True)
    init.write_text(f'module() {{ [ "$1" = load ] && [ -d "{tmp}/apps/$2" ] && PATH="{tmp}/apps/$2/bin:$PATH" '
                    f'&& return 0; echo "unknown $2" >&2; return 1; }}\n')
    return init, bindir


def run_setup(env: dict[str, str], pre: str = "") -> ClusterPython | None:
    res = subprocess.run(["/bin/bash", "-c", "set -u\n" + pre + python_setup()], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", **env})
    assert res.returncode == 0, res.stderr
    return _parse_python(res.stdout.splitlines())


def test_python_comes_from_the_module_system(tmp_path: Path) -> None:
    init, bindir = fake_lmod(tmp_path)
    # module already a shell function (Lmod's usual state on a login node)
    py = run_setup({}, pre=f". {init}\n")
    assert py is not None and py.module == PYTHON_MODULE and py.path == f"{bindir}/python3"
    assert py.version == "%d.%d.%d" % sys.version_info[:3]
    # module not defined yet, but Lmod is installed: its init file is found through LMOD_PKG
    pkg = tmp_path / "lmodpkg"
    (pkg / "init").mkdir(parents=True)
    (pkg / "init" / "bash").write_text(init.read_text())
    py = run_setup({"LMOD_PKG": str(pkg)})
    assert py is not None and py.module == PYTHON_MODULE and py.path == f"{bindir}/python3"


def test_without_a_module_system_the_login_python_is_used(tmp_path: Path) -> None:
    py = run_setup({"LMOD_PKG": str(tmp_path / "none"), "MODULESHOME": str(tmp_path / "none")})
    assert py is not None and py.module is None and py.path == "/usr/bin/python3"
    assert "no module system" in py.describe()


def test_a_failing_module_load_is_reported_not_fatal(tmp_path: Path) -> None:
    res = subprocess.run(["/bin/bash", "-c", "set -u\nmodule() { return 1; }\n" + python_setup()],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert "RVDEPS:NOMODULE" in res.stdout
    py = _parse_python(res.stdout.splitlines())
    assert py is not None and py.module is None and py.version


def test_version_mismatch_means_recreate() -> None:
    assert ClusterPython("3.12.8", "/p", "m", "3.6.8").recreate
    assert "re-created" in ClusterPython("3.12.8", "/p", "m", "3.6.8").describe()
    assert not ClusterPython("3.12.8", "/p", "m", "3.12.1").recreate
    assert not ClusterPython("3.12.8", "/p", "m", None).recreate


def test_jobs_load_the_same_python_module() -> None:
    assert PYTHON_MODULE in DEFAULT_MODULES


@pytest.mark.parametrize("command", ["bash job.sh", "./job.sh", ["bash", "job.sh", "--x"], "sh job.sh && echo ok"])
def test_shell_script_entries_get_the_venv(tmp_path: Path, command) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "job.sh").write_text("pip install x\npython train.py\n")
    (root / "requirements.txt").write_text("tinyalpha\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    plan = plan_command(root, command)
    assert plan.manage_deps and plan.deps is not None and "job.sh" in (plan.deps_reason or "")


# ----------------------------------------------------------------------------- on the real cluster


def make_project(root: Path) -> None:
    wheels = root / "wheels"
    wheels.mkdir(parents=True)
    make_wheel(wheels, "tinyalpha", "1.0", "A = 'alpha'\n")
    make_wheel(wheels, "tinyextra", "3.0", "E = 'extra'\n")
    (root / "requirements.txt").write_text("--no-index\n--find-links wheels\ntinyalpha\n")
    (root / "job.sh").write_text(
        "#!/bin/bash\n"
        "echo \"VENV=$VIRTUAL_ENV\"\n"
        "pip install -q --no-index --find-links ../wheels tinyextra\n"
        "python -c 'import sys, tinyalpha, tinyextra; print(\"PY\", sys.prefix, tinyalpha.A, tinyextra.E)'\n")
    (root / "job.sh").chmod(0o755)
    (root / "sub").mkdir()
    (root / "sub" / "keep.txt").write_text("x\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)


@pytest.mark.cluster
def test_venv_uses_the_cluster_python_and_shell_scripts_run_in_it(capsys, tmp_path, rv_home, own_jobs,
                                                                  slurm_cluster, monkeypatch):
    from rv_tui.cli.main import main

    root = tmp_path / f"venvpy-{secrets.token_hex(3)}"
    make_project(root)
    monkeypatch.chdir(root / "sub")
    module_bin = f"{slurm_cluster.state_dir}/lmod/apps/{PYTHON_MODULE}/bin"
    system = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                            capture_output=True, text=True).stdout.strip()

    # the dry run says which Python the venv gets, and why this command has one
    code = main(["run", "--dry-run", "--json", "-g", "1", "-t", "a6000", "--", "bash", "../job.sh"])
    out, err = capsys.readouterr()
    assert code == 0, err
    ws = json.loads(out)["launch"]["workspace"]
    venv = ws["venv"]
    assert ws["python"]["module"] == PYTHON_MODULE and ws["python"]["path"] == f"{module_bin}/python3"
    assert ws["python"]["version"] == system and "job.sh" in ws["deps_reason"]
    assert ws["subdir"] == "sub"
    try:
        code = main(["run", "--dry-run", "-g", "1", "-t", "a6000", "--", "bash", "../job.sh"])
        out, err = capsys.readouterr()
        assert re.search(rf"^python: +Python {re.escape(system)} \({re.escape(module_bin)}/python3; module "
                         rf"{re.escape(PYTHON_MODULE)}\)$", out, re.M), out

        # a real run: venv created with the module's python; the script's pip installs into it
        code = main(["run", "-f", "-g", "1", "-t", "a6000", "--time", "10m", "--", "bash", "../job.sh"])
        out, err = capsys.readouterr()
        assert code == 0, (out, err)
        assert f"VENV={venv}" in out.splitlines(), out
        assert f"PY {venv} alpha extra" in out.splitlines(), out
        assert f"venv python: Python {system}" in err
        cfg = main(["exec", "cat", f"{venv}/pyvenv.cfg"]), capsys.readouterr()
        assert cfg[0] == 0 and f"home = {module_bin}" in cfg[1][0], cfg

        # ./job.sh (the script itself) gets the venv too, and what pip installed persisted
        code = main(["run", "-f", "-g", "1", "-t", "a6000", "--time", "10m", "--",
                     "../job.sh && python -c 'import tinyextra; print(\"STILL\", tinyextra.E)'"])
        out, err = capsys.readouterr()
        assert code == 0, (out, err)
        assert "STILL extra" in out.splitlines() and f"VENV={venv}" in out.splitlines(), out

        # the venv's Python changes (cluster upgrade): the venv is re-created with the new one
        fake = "#!/bin/sh\\necho 3.6.8\\n"
        assert main(["exec", "sh", "-c", f"rm -f {venv}/bin/python && printf '{fake}' > {venv}/bin/python && "
                     f"chmod +x {venv}/bin/python"]) == 0
        capsys.readouterr()
        code = main(["run", "-f", "-g", "1", "-t", "a6000", "--time", "10m", "--",
                     "python", "-c", "import sys, tinyalpha; print('AGAIN', sys.version_info[:2] >= (3, 7))"])
        out, err = capsys.readouterr()
        assert code == 0, (out, err)
        assert "AGAIN True" in out.splitlines(), out
        assert f"venv re-created (it had Python 3.6.8, the cluster's is {system})" in err, err
    finally:
        main(["exec", "rm", "-rf", "--", venv, venv + ".lock",
              ws["code_dir"].rsplit("/", 2)[0]])
        capsys.readouterr()
