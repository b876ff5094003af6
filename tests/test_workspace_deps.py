"""Dependencies: requirement parsing, smart execution, and the two-phase install end to end.

The cluster test builds two tiny wheels and a "needs CUDA" sdist in the test (no network): the
sdist's in-tree build backend refuses to build unless ``SLURM_JOB_ID`` is set, i.e. anywhere but
inside a job on a compute node, so phase 1 must defer it and phase 2 (in the job) install it once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import secrets
import subprocess
import tarfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rv_tui.cluster.base import Cluster
from rv_tui.cluster.ssh import SshCluster
from rv_tui.config import load_config
from rv_tui.quoting import q
from rv_tui.workspace.deps import detect_deps, ensure_venv, parse_requirements
from rv_tui.workspace.prepare import plan_command, prepare_workspace


# ----------------------------------------------------------------------------- test packages

def make_wheel(dest: Path, name: str, version: str, code: str) -> Path:
    """A minimal valid pure-Python wheel, written with zipfile."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": code.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: rv-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for n, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{n},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in files.items():
            zf.writestr(n, data)
    return path


BACKEND = '''
"""In-tree PEP 517 backend: builds only inside a Slurm job (stands in for a CUDA build)."""
import base64, hashlib, os, zipfile

NAME, VERSION = "needscuda", "0.1"

def _check():
    if not os.environ.get("SLURM_JOB_ID"):
        raise SystemExit("needscuda: nvcc not found (this package must be built on a GPU node)")

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _check()
    dist = f"{NAME}-{VERSION}.dist-info"
    files = {f"{NAME}/__init__.py": b"BUILT_ON_COMPUTE = True\\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}
    rec = []
    for n, d in files.items():
        h = base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b"=").decode()
        rec.append(f"{n},sha256={h},{len(d)}")
    rec.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\\n".join(rec) + "\\n").encode()
    fn = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, fn), "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
    return fn
'''


def make_sdist(dest: Path) -> Path:
    files = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "rvbackend"\nbackend-path = ["."]\n\n'
                          '[project]\nname = "needscuda"\nversion = "0.1"\n',
        "rvbackend.py": BACKEND,
        "PKG-INFO": "Metadata-Version: 2.1\nName: needscuda\nVersion: 0.1\n",
    }
    path = dest / "needscuda-0.1.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for n, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"needscuda-0.1/{n}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_project(root: Path, *, cuda: bool = True) -> None:
    wheels = root / "wheels"
    wheels.mkdir(parents=True)
    make_wheel(wheels, "tinyalpha", "1.0", "A = 'alpha'\n")
    make_wheel(wheels, "tinybeta", "2.0", "B = 'beta'\n")
    make_sdist(wheels)
    reqs = ["--no-index", "--find-links wheels", "tinyalpha==1.0", "tinybeta"]
    if cuda:
        reqs.append("needscuda")
    (root / "requirements.txt").write_text("\n".join(reqs) + "\n")
    (root / "train.py").write_text(
        "import sys, tinyalpha, tinybeta\n"
        "try:\n    import needscuda\n    cuda = needscuda.BUILT_ON_COMPUTE\nexcept ImportError:\n    cuda = None\n"
        "print('RESULT', tinyalpha.A, tinybeta.B, cuda, sys.prefix, ' '.join(sys.argv[1:]))\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)


# ----------------------------------------------------------------------------- unit tests

def test_parse_requirements_keeps_options_and_expands_includes(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("--extra-index-url https://x.example/simple\nnumpy>=1.0 # math\n")
    (tmp_path / "requirements.txt").write_text(
        "# top\n-r base.txt\n--find-links=wheels\n-e .\ntorch==2.1 ; python_version > '3.8'\n\n")
    opts, reqs, local = parse_requirements(tmp_path / "requirements.txt", tmp_path)
    assert opts == ["--extra-index-url", "https://x.example/simple", "--find-links", "wheels"]
    assert reqs == ["numpy>=1.0", "torch==2.1 ; python_version > '3.8'"]
    assert local == ["."]


def test_pyproject_dependencies_and_hash(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname="x"\nversion="0"\ndependencies=["requests>=2"]\n')
    spec = detect_deps(tmp_path)
    assert spec is not None and spec.kind == "pyproject" and spec.requirements == ("requests>=2",)
    assert spec.local_paths == (".",)
    (tmp_path / "requirements.txt").write_text("requests>=2\n")
    spec2 = detect_deps(tmp_path)
    assert spec2 is not None and spec2.kind == "requirements" and spec2.hash != spec.hash


def test_smart_execution_rules(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    make_project(root, cuda=False)
    (root / "scripts").mkdir()
    (root / "scripts" / "go.sh").write_text("echo hi\n")
    # the command is never rewritten; a sub-directory becomes the working directory in the snapshot
    p = plan_command(root / "scripts", ["../train.py", "--lr", "1e-3", "it's"])
    assert p.command == "../train.py --lr 1e-3 'it'\"'\"'s'" and p.entry == "train.py" and p.manage_deps
    assert p.subdir == "scripts"
    p = plan_command(root, ["torchrun", "--nproc_per_node=4", "train.py", "--x"])
    assert p.command == "torchrun --nproc_per_node=4 train.py --x" and p.manage_deps
    p = plan_command(root, ["scripts/go.sh"])  # a project shell script gets the venv too
    assert p.command == "scripts/go.sh" and p.manage_deps and p.entry == "scripts/go.sh"
    p = plan_command(root, "make train")  # opaque shell string: no deps, but still synced
    assert p.command == "make train" and not p.manage_deps and p.project is not None
    p = plan_command(root, ["python", "-c", "import tinyalpha"])
    assert p.manage_deps and p.deps is not None and p.command == "python -c 'import tinyalpha'"
    outside = tmp_path / "nothing"
    outside.mkdir()
    p = plan_command(outside, ["python", "-c", "1"])
    assert p.project is None and not p.manage_deps


# ----------------------------------------------------------------------------- cluster tests

@pytest.fixture
async def cluster(rv_home: Path) -> AsyncIterator[Cluster]:
    c = SshCluster.from_config(load_config())
    await c.connect()
    yield c
    await c.close()


async def wait_job(cluster: Cluster, job_id: str, deadline_s: float = 180) -> str:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while loop.time() < end:
        res = await cluster.exec(f"squeue -h -j {q(job_id)} -o %T 2>/dev/null")
        if not res.stdout.strip():
            return "done"
        await asyncio.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {deadline_s}s")


async def run_job(cluster: Cluster, plan, out: str) -> str:
    ctx = plan.job_context_fields()
    script = "\n".join(["#!/bin/bash", f". {q(ctx['venv'] + '/bin/activate')}",
                        f"cd -- {q(ctx['work_dir'])}", ctx["setup_snippet"], ctx["command"]])
    res = await cluster.exec(f"sbatch --parsable -p standard -t 10 -o {q(out)} --wrap {q(script)}")
    assert res.ok, res.stderr
    job_id = res.stdout.strip().split(";")[0]
    await wait_job(cluster, job_id)
    return (await cluster.read_file(out)).decode()


@pytest.mark.cluster
@pytest.mark.slow
async def test_two_phase_install_defers_cuda_package_to_the_job(cluster: Cluster, tmp_path: Path,
                                                                  clean_queue: None) -> None:
    root = tmp_path / f"dep-proj-{secrets.token_hex(3)}"
    make_project(root)
    plan = await prepare_workspace(cluster, root, ["python", "train.py", "--tag", "$(id)"], job_name="deps")
    try:
        assert plan.venv and plan.venv_result is not None
        assert plan.venv_result.status == "installed" and plan.venv_result.deferred == ("needscuda",)
        assert plan.command == "python train.py --tag '$(id)'"
        out1 = await run_job(cluster, plan, f"{plan.snapshot}/../job1.out")
        assert f"RESULT alpha beta True {plan.venv} --tag $(id)" in out1
        assert "deferred dependencies installed" in out1
        # phase 2 happened once: the next launch is up to date and its job installs nothing
        plan2 = await prepare_workspace(cluster, root, ["python", "train.py"], job_name="deps2")
        assert plan2.venv_result is not None and plan2.venv_result.status == "up-to-date"
        out2 = await run_job(cluster, plan2, f"{plan2.snapshot}/../job2.out")
        assert "RESULT alpha beta True" in out2 and "installing deferred" not in out2
    finally:
        ws = plan.code_dir.rsplit("/", 2)[0] if plan.code_dir else None
        if ws:
            await cluster.exec(f"rm -rf {q(ws)} {q(plan.venv.rsplit('/', 1)[0])}")


@pytest.mark.cluster
async def test_concurrent_launches_install_once(cluster: Cluster, tmp_path: Path) -> None:
    root = tmp_path / f"lock-proj-{secrets.token_hex(3)}"
    make_project(root, cuda=False)
    plan = plan_command(root, ["python", "train.py"])
    assert plan.project is not None and plan.deps is not None
    from rv_tui.paths import RemotePaths
    from rv_tui.workspace import sync

    paths = RemotePaths(cluster.scratch)
    code = paths.code_dir(plan.project.name, plan.project.branch)
    venv = paths.venv(plan.project.name, plan.project.branch)
    try:
        await sync.push(cluster, root, code)
        results = await asyncio.gather(*(ensure_venv(cluster, plan.deps, venv, code) for _ in range(2)))
        assert sorted(r.status for r in results) == ["installed", "up-to-date"]
        check = await cluster.exec(f"{q(venv + '/bin/python')} -c 'import tinyalpha, tinybeta; print(tinyalpha.A)'")
        assert check.stdout.strip() == "alpha"
    finally:
        await cluster.exec(f"rm -rf {q(code.rsplit('/', 2)[0])} {q(venv.rsplit('/', 1)[0])}")
