"""The command rule: several arguments are an argv and run exactly as given; one argument is a
shell string and runs byte for byte under ``bash -c``; a sub-directory changes the job's working
directory inside the snapshot, never the command text.

What is checked is what the job really receives: the batch script's run block is executed by a
real bash with ``_rv_run`` stubbed to print its arguments, so the test sees the exact string the
job hands to ``bash -c`` (and, for argv commands, the exact words that bash then runs, caught by
``command_not_found_handle``).  A real-cluster test runs a few commands through ``rv run -f``
and compares their effects.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rv_tui.allocator.model import Request, Strategy, StrategyKind
from rv_tui.cli.main import build_parser
from rv_tui.cli.run import split_command
from rv_tui.jobs.templates import JobContext, build_script
from rv_tui.workspace.prepare import plan_command

# ----------------------------------------------------------------------------- helpers


def strat(nodes: int = 1, kind: StrategyKind = StrategyKind.DIRECT) -> Strategy:
    return Strategy(id="s1", label="t", gpu_type="a6000", partition="gpu-a6000", nodes=nodes, gpus_per_node=1,
                    kind=kind, walltime_s=3600, time_min_s=None, est_wait_s=0.0, est_su=0.0, mem="8G",
                    cpus_per_task=2, constraint=None, total_time_s=7200)


def job_received(script: str) -> list[str]:
    """The arguments the job script hands to ``_rv_run`` (run by real bash, ``_rv_run`` stubbed)."""
    start = script.index("\n_rv_cmd=") + 1
    end = script.index("\n", script.index("_rv_run ", start))
    block = script[start:end]
    harness = ("_rv_run() { printf '%s\\0' \"$@\" > \"$RV_OUT\"; }\n"
               "_rv_killafter=5; _rv_tmo=10\n" + block + "\n")
    with tempfile.NamedTemporaryFile() as out:
        proc = subprocess.run(["/bin/bash", "-c", harness], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "RV_OUT": out.name})
        assert proc.returncode == 0, proc.stderr
        data = Path(out.name).read_bytes()
    return [x.decode("utf-8", "surrogateescape") for x in data.split(b"\0")[:-1]]


def shell_string_of(script: str) -> str:
    """The string the job runs under ``bash -c`` (single node) / hands to every task (multi-node)."""
    args = job_received(script)
    if args[:2] == ["bash", "-c"]:
        assert len(args) == 3, args
        return args[2]
    return args[-1]  # srun ... bash -c <task> rv-task <command> / timeout ... bash -c <inner> rv-job <command>


def words_bash_runs(command: str) -> list[str]:
    """The words ``bash -c command`` runs when the first one is not a program (PATH is empty)."""
    handler = "command_not_found_handle() { printf '%s\\0' \"$@\"; return 0; }\n"
    res = subprocess.run(["/bin/bash", "-c", handler + command], capture_output=True,
                         env={"PATH": "/nonexistent", "LC_ALL": "C.UTF-8"})
    assert res.returncode == 0, res.stderr
    return [x.decode("utf-8", "surrogateescape") for x in res.stdout.split(b"\0")[:-1]]


def ctx(command: str, tmp: Path, **kw) -> JobContext:
    return JobContext(name="t", command=command, scratch=str(tmp), group_id="g1", **kw)


def make_project(root: Path, *, deps: bool = True) -> Path:
    (root / "src").mkdir(parents=True)
    for f in ("a.py", "b.py", "src/train.py"):
        (root / f).write_text("print('x')\n")
    (root / "job.sh").write_text("#!/bin/bash\necho job\n")
    (root / "job.sh").chmod(0o755)
    (root / "Makefile").write_text("train:\n\techo train\n")
    if deps:
        (root / "requirements.txt").write_text("tinyalpha\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    return root


#: real shell strings people pass to ``rv run "<...>"`` (several mention local project files)
CORPUS = [
    "python a.py && python b.py > out.txt",
    "python a.py | tee log.txt",
    "python3 a.py --lr $LR --name \"$USER-run\" 2>&1 | grep -v WARN",
    "for s in 1 2 3; do python a.py --seed $s; done",
    "for f in *.py; do echo \"$f\"; done > list.txt",
    "cd src && python train.py",
    "bash job.sh && echo done || echo failed",
    "./job.sh 'quoted arg' \"double $HOME\"",
    "export X=1; python a.py; echo \"exit=$?\"",
    "python -c 'import sys; print(sys.argv)' \"héllo wörld\" ☃ 日本語",
    "cat <<'EOF' > cfg.yaml\nlr: $LR\nname: 'x'\nEOF\npython a.py --config cfg.yaml",
    "python a.py # a comment with 'quotes",
    "(python a.py; python b.py) &\nwait",
    "make train",
    "if [ -f a.py ]; then python a.py; else echo no; fi",
    "echo `date` $(id -u) ${HOME:-x} \\$escaped",
    "torchrun --nproc_per_node=2 a.py && echo ok",
    "  leading and trailing spaces  ",
    "unbalanced 'quote",
    "a.py",
]

KEYWORDS = ["for", "if", "then", "time", "while", "do", "done", "case", "function", "select", "coproc",
            "until", "in", "esac", "elif", "else", "fi", "!", "{", "}", "[[", "FOO=1", "A=b c", "x=", "-v", "~"]

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


# ----------------------------------------------------------------------------- the CLI split


@given(st.lists(_text, min_size=2, max_size=6))
@settings(max_examples=150, deadline=None)
def test_argv_reaches_bash_as_exactly_those_words(argv: list[str]) -> None:
    """Several arguments: whatever they contain, bash runs exactly these words."""
    argv = ["rvprobe-" + argv[0].replace("/", "")] + argv[1:]
    command, _ = split_command(argv)
    assert words_bash_runs(command) == argv


@pytest.mark.parametrize("head", KEYWORDS)
def test_argv_head_is_a_command_name_never_a_keyword_or_assignment(head: str) -> None:
    """``rv run for x`` runs a program called ``for``; ``rv run FOO=1 x`` a program called ``FOO=1``."""
    command, _ = split_command([head, "arg one", "$(id)"])
    assert words_bash_runs(command) == [head, "arg one", "$(id)"]


@given(_text)
@settings(max_examples=100, deadline=None)
def test_one_argument_is_the_shell_string_byte_for_byte(s: str) -> None:
    assert split_command([s])[0] == s
    assert split_command(["--", s])[0] == s


def test_parser_keeps_every_word_after_the_command() -> None:
    """argparse hands ``rv run`` every word, inner ``--`` and flag-looking words included."""
    p = build_parser()
    for argv in (["python", "x.py", "--", "--foo", "-g", "2"], ["--", "-x", "y"], ["a b && c"], ["-f", "x"]):
        args = p.parse_args(["run", "--dry-run", "--", *argv])
        assert list(args.cmd) == ["--", *argv]
    args = p.parse_args(["run", "--", "rvprobe", "x.py", "--", "--foo"])
    assert words_bash_runs(split_command(list(args.cmd))[0]) == ["rvprobe", "x.py", "--", "--foo"]


# ----------------------------------------------------------------------------- workspace + job script


@pytest.mark.parametrize("command", CORPUS)
@pytest.mark.parametrize("sub", ["", "src"])
def test_shell_strings_run_unchanged_in_the_job(tmp_path: Path, command: str, sub: str) -> None:
    """A shell string mentioning local ``.py`` files is neither split nor re-quoted, from the
    project root or a sub-directory; every template kind hands bash exactly the typed bytes."""
    root = make_project(tmp_path / "proj")
    plan = plan_command(root / sub if sub else root, command)
    assert plan.command == command
    assert plan.project is not None and plan.project.root == root.resolve()
    assert plan.subdir == sub
    for s in (strat(), strat(nodes=2), strat(kind=StrategyKind.CHECKPOINT), strat(2, StrategyKind.CHECKPOINT)):
        assert shell_string_of(build_script(ctx(plan.command, tmp_path), s)) == command


@given(st.lists(_text, min_size=2, max_size=5), st.sampled_from(["", "src"]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_argv_runs_unchanged_from_any_directory(tmp_path: Path, argv: list[str], sub: str) -> None:
    root = tmp_path / "proj"
    if not root.exists():
        make_project(root)
    argv = ["rvprobe-" + argv[0].replace("/", "")] + argv[1:]
    command, _ = split_command(argv)
    plan = plan_command(root / sub if sub else root, command)
    assert plan.command == command
    assert words_bash_runs(shell_string_of(build_script(ctx(plan.command, tmp_path), strat()))) == argv


@given(_text)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_arbitrary_shell_strings_run_unchanged(tmp_path: Path, s: str) -> None:
    root = tmp_path / "proj"
    if not root.exists():
        make_project(root)
    for command in (s, f"python a.py {s}", f"bash job.sh && {s}"):
        plan = plan_command(root, command)
        assert plan.command == command
        assert shell_string_of(build_script(ctx(command, tmp_path), strat())) == command


def test_argv_with_local_file_is_not_rewritten(tmp_path: Path) -> None:
    """``rv run python ../a.py 'it's'`` from ``src/``: same words, run from ``<snapshot>/src``."""
    root = make_project(tmp_path / "proj")
    command, _ = split_command(["python", "../a.py", "--lr", "1e-3", "it's"])
    plan = plan_command(root / "src", command)
    assert plan.command == command and plan.entry == "a.py" and plan.subdir == "src"
    assert plan.manage_deps


def test_subdirectory_is_the_working_directory_inside_the_snapshot(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj")
    plan = plan_command(root / "src", "python train.py")
    assert plan.command == "python train.py" and plan.entry == "src/train.py"
    plan.snapshot = "/s/snap/t-1"
    assert plan.job_context_fields()["work_dir"] == "/s/snap/t-1/src"


# ----------------------------------------------------------------------------- deps and venv rules


@pytest.mark.parametrize("command,deps,why", [
    ("python a.py && python b.py > out.txt", True, "python"),
    (["python3", "-c", "import x"], True, "python"),
    ("make train", False, None),
    ("echo hi && ls", False, None),
    ("bash job.sh", True, "job.sh"),
    ("./job.sh --fast", True, "job.sh"),
    (["bash", "job.sh"], True, "job.sh"),
    ("cd src && python train.py", False, None),  # opaque: no word names a local file
    ("python3 src/train.py | tee log", True, "python"),
    (["torchrun", "--nproc_per_node=2", "a.py"], True, "a.py"),
    ("for s in 1 2; do bash job.sh $s; done", True, "job.sh"),
])
def test_which_commands_get_dependencies_and_the_venv(tmp_path: Path, command, deps: bool, why: str | None) -> None:
    """python/python3 commands always; other commands only when they run a project script, and
    the plan says which; opaque shell strings never."""
    root = make_project(tmp_path / "proj")
    cmd = command if isinstance(command, str) else split_command(command)[0]
    plan = plan_command(root, cmd)
    assert plan.manage_deps is deps, plan
    assert plan.command == cmd
    if why:
        assert why in (plan.deps_reason or ""), plan.deps_reason
    # without a dependency file nothing is managed, whatever the command
    bare = make_project(tmp_path / "bare", deps=False)
    assert plan_command(bare, cmd).manage_deps is False


# ----------------------------------------------------------------------------- the launch path (rv run and TUI)


async def test_prepare_launch_submits_the_typed_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared launch assembly (``rv run`` and the TUI) keeps the string in the request, the
    group record's command and every sibling's script."""
    from rv_tui.cluster.demo import DemoCluster
    from rv_tui.jobs.launch import prepare_launch

    monkeypatch.setenv("RV_HOME", str(tmp_path / "home"))
    root = make_project(tmp_path / "proj")
    cluster = DemoCluster(seed=3)
    try:
        for command in CORPUS[:6]:
            launch = await prepare_launch(cluster, None, Request(gpus=1, gpu_type="a6000"), command,
                                          cwd=root / "src", name="v", dry_run=True)
            assert launch.request.command == command
            assert launch.workspace.subdir == "src"
            for e in launch.entries:
                assert e.submission.command == command
                assert shell_string_of(e.submission.script) == command
                assert f"cd -- {launch.workspace.snapshot}/src" in e.submission.script
    finally:
        await cluster.close()


# ----------------------------------------------------------------------------- on the real cluster


@pytest.mark.cluster
def test_jobs_receive_exactly_the_typed_commands(capsys, tmp_path, rv_home, own_jobs, slurm_cluster, monkeypatch):
    from rv_tui.cli.main import main

    root = tmp_path / "verbatim"
    root.mkdir()
    (root / "sub").mkdir()
    (root / "a.py").write_text("print('A ran')\n")
    (root / "b.py").write_text("import sys\nprint('B ran', sys.argv[1:])\n")
    (root / "sub" / "c.py").write_text("import os\nprint('C in', os.path.basename(os.getcwd()))\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    cases = [
        # (cwd, argv given to rv run, lines the job must print)
        (root, ["python3 a.py && python3 b.py 'x y' > out.txt; cat out.txt"], ["A ran", "B ran ['x y']"]),
        (root, ["for i in 1 2 3; do echo \"n=$i\"; done | tr n N"], ["N=1", "N=2", "N=3"]),
        (root, ["echo \"$0\" '$HOME' \"héllo ☃\"; cat <<'EOF'\nlit $X `id`\nEOF"],
         ["bash $HOME héllo ☃", "lit $X `id`"]),
        (root, ["python3", "-c", "import sys; print('ARGV', sys.argv[1:])", "a b", "$(id)", "", "it's", "&&"],
         ["ARGV ['a b', '$(id)', '', \"it's\", '&&']"]),
        (root / "sub", ["python3 c.py && ls ../a.py"], ["C in sub", "../a.py"]),
    ]
    for cwd, argv, want in cases:
        monkeypatch.chdir(cwd)
        code, out, err = main(["run", "-f", "-g", "1", "-t", "a6000", "--time", "10m", "--", *argv]), *capsys.readouterr()
        assert code == 0, (argv, out, err)
        lines = [ln for ln in out.splitlines() if not ln.startswith("[rv]")]
        for w in want:
            assert w in lines, (argv, out)


def test_outside_the_project_is_an_error_not_a_rewrite(tmp_path: Path) -> None:
    """``rv run python proj/a.py`` from outside ``proj``: the path would not exist where the job
    runs, and rv does not rewrite it, so it says what to do instead."""
    from rv_tui.errors import RvError

    make_project(tmp_path / "proj")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(RvError) as exc:
        plan_command(outside, "python ../proj/a.py")
    assert "cd " in (exc.value.hint or "")
    plan = plan_command(outside, "echo hi")  # no project script: runs in $HOME, as typed
    assert plan.project is None and plan.command == "echo hi" and not plan.manage_deps


def test_preflight_reads_the_script_of_a_shell_string(tmp_path: Path) -> None:
    from rv_tui.jobs.preflight import entry_script

    root = make_project(tmp_path / "proj")
    assert entry_script(root, "python a.py;echo done") == root / "a.py"
    assert entry_script(root / "src", "cd .. && python3 train.py > log") == root / "src" / "train.py"


@pytest.mark.parametrize("nodes", [1, 2])
def test_torchrun_rendezvous_comes_from_pet_variables_not_edits(tmp_path: Path, nodes: int) -> None:
    """torchrun reads PET_<FLAG> for each flag it is not given, so the job exports those instead
    of inserting flags into the command; on multi-node each task gets its own PET_NODE_RANK."""
    command = "torchrun --nproc_per_node=2 a.py && echo ok"
    script = build_script(ctx(command, tmp_path), strat(nodes=nodes))
    args = job_received(script)
    assert args[-1] == command
    probe = 'printf "%s|%s|%s|%s" "$PET_MASTER_PORT" "${PET_NNODES-}" "${PET_MASTER_ADDR-}" "${PET_NODE_RANK-}"'
    start = script.index("\n_rv_cmd=") + 1
    exports = next(ln for ln in script[start:].splitlines() if ln.startswith("export PET_"))
    env = {"PATH": "/usr/bin:/bin", "MASTER_PORT": "29555", "SLURM_NNODES": str(nodes), "MASTER_ADDR": "n1",
           "SLURM_PROCID": "1", "SLURM_NTASKS": str(nodes)}
    if nodes == 1:
        out = subprocess.run(["/bin/bash", "-c", exports + "\n" + probe], capture_output=True, text=True, env=env)
        assert out.stdout == "29555|||"
    else:
        task = args[args.index("-c") + 1]  # srun ... bash -c <task> rv-task <command>
        out = subprocess.run(["/bin/bash", "-c", exports + "\n" + f"bash -c {shlex.quote(task)} rv-task {shlex.quote(probe)}"],
                             capture_output=True, text=True, env=env)
        assert out.stdout == "29555|2|n1|1", out.stderr


def run_block_for_real(script: str, tmp: Path) -> str:
    """Execute the run block with real bash and real ``timeout``; ``srun`` runs its command once."""
    start = script.index("\n_rv_cmd=") + 1
    end = script.index("\n", script.index("_rv_run ", start))
    harness = ("_rv_run() { \"$@\"; }\n"
               "srun() { while [ \"${1#--}\" != \"$1\" ]; do shift; done; \"$@\"; }\nexport -f srun\n"
               "_rv_killafter=5; _rv_tmo=30; _rv_end=$(( $(date +%s) + 600 ))\n" + script[start:end] + "\n")
    res = subprocess.run(["/bin/bash", "-c", harness], capture_output=True, text=True, cwd=tmp,
                         env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "SLURM_PROCID": "0", "SLURM_NTASKS": "1",
                              "SLURM_NNODES": "1", "MASTER_PORT": "1", "MASTER_ADDR": "h"})
    return res.stdout


@pytest.mark.parametrize("s", [strat(), strat(nodes=2), strat(kind=StrategyKind.CHECKPOINT),
                               strat(2, StrategyKind.CHECKPOINT)], ids=["simple", "multi", "ckpt", "ckpt-multi"])
def test_every_template_runs_the_command_as_bash_c_would(tmp_path: Path, s: Strategy) -> None:
    """Same output as ``bash -c CMD`` itself: no positional parameters leak in (``$#`` is 0),
    quotes, expansions, pipes and heredocs behave the same."""
    for command in ['printf "<%s>" "$#" "$@"; echo', "for i in 1 2; do echo \"n$i\"; done | tr n N",
                    "cat <<'EOF'\n$HOME `x`\nEOF", "echo 'a  b' \"$((1+2))\" ☃"]:
        want = subprocess.run(["/bin/bash", "-c", command], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}).stdout
        got = run_block_for_real(build_script(ctx(command, tmp_path), s), tmp_path)
        assert want in got, (command, got)


def test_the_issue_example_in_the_dry_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``rv run --dry-run "python a.py && python b.py > out.txt"`` in a git project used to print
    ``python a.py '&&' python b.py '>' out.txt``."""
    from rv_tui.cli.main import main

    monkeypatch.setenv("RV_HOME", str(tmp_path / "home"))
    root = make_project(tmp_path / "proj")
    monkeypatch.chdir(root / "src")
    code = main(["--demo", "--seed", "3", "run", "--dry-run", "-g", "1", "-t", "a6000",
                 "python ../a.py && python ../b.py > out.txt"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "command:  python ../a.py && python ../b.py > out.txt\n" in out
    assert re.search(r"^runs in: +\S+/snapshots/\S+/src \(you are in src/\)$", out, re.M), out
    assert re.search(r"^venv: +\S+ \(the command starts with python: dependencies from requirements.txt", out, re.M)
