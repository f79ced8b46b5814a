"""A real single-node SLURM cluster for tests: the session fixture ``slurm_cluster``.

A test module that needs it imports the fixture::

    from tests.slurm_cluster import slurm_cluster  # noqa: F401

    def test_something(slurm_cluster, tmp_path):
        out = slurm_cluster.run("sbatch", "--parsable", "-o", str(tmp_path / "%j.out"), "--wrap", "true")

The fixture starts the cluster with ``launchers/slurm_up.sh`` (which installs the Debian
packages on first use), yields a :class:`SlurmCluster`, and stops it with
``launchers/slurm_down.sh`` at the end of the session, also when tests fail. A cluster
that was already fully running before the session (a developer's, from ``slurm_up.sh``)
is used (restarted by slurm_up.sh only if its configuration differs) and left running. It skips, naming what is missing, when not root, not
on Debian with apt, or when the packages cannot be installed.

Environment: ``OUTRO_SLURM_DIR`` (the prefix, default ``/tmp/outro_slurm``),
``OUTRO_SKIP_SLURM=1`` (skip every test that needs the cluster), ``OUTRO_SLURM_KEEP=1``
(leave a cluster this session started running at the end), ``OUTRO_SLURM_MAX_ARRAY_SIZE``
(default here :data:`TEST_MAX_ARRAY_SIZE`; slurm_up.sh restarts a running cluster whose
configuration differs).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SLURM_UP = REPO_ROOT / "launchers" / "slurm_up.sh"
SLURM_DOWN = REPO_ROOT / "launchers" / "slurm_down.sh"
DEFAULT_PREFIX = "/tmp/outro_slurm"
# MaxArraySize of the test cluster: a sweep of 5 cells must be split into two arrays, while the
# largest array another test submits (a 2x2 sweep: indices 0-3) still fits in one.
TEST_MAX_ARRAY_SIZE = 4
# slurm_up.sh's exit codes that mean "this machine cannot have the cluster" (skip)
_EXIT_UNSUPPORTED = {20: "not root or not Debian with apt", 21: "Debian packages cannot be installed"}
# pid files slurm_up.sh writes, relative to the prefix
_DAEMONS = {
    "munged": "munge/munged.pid",
    "mariadbd": "mysql-run/mariadbd.pid",
    "slurmdbd": "run/slurmdbd.pid",
    "slurmctld": "run/slurmctld.pid",
    "slurmd": "run/slurmd.pid",
}
# variables of an enclosing SLURM job that would confuse sbatch/srun/submitit
_JOB_ENV_PREFIXES = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SQUEUE_", "SACCT_")

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.25, what: str = "") -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Raises TimeoutError (naming ``what`` and the last value) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last: T = predicate()
    while not last:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what or predicate!r} (last value: {last!r})")
        time.sleep(interval)
        last = predicate()
    return last


def _expand_task_ids(spec: str) -> list[str]:
    """'3' -> ['3']; '[0-2,5%2]' -> ['0', '1', '2', '5'] (sacct's pending array ranges)."""
    spec = spec.strip("[]").split("%")[0]
    ids: list[str] = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            ids.extend(str(i) for i in range(int(lo), int(hi) + 1))
        elif part:
            ids.append(part)
    return ids


def parse_sacct_states(text: str) -> dict[str, str]:
    """Parse ``sacct -n -P -o JobID,State -X`` output into {task_id: STATE}.

    Array tasks are keyed by their index ('0', '1', ...; a pending range '12_[3-5]' gives
    '3', '4', '5'); a plain job by its own id. 'CANCELLED by 0' reads 'CANCELLED'. When
    a task appears twice (sacct -D: requeued attempts), the last line wins.
    """
    states: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or "|" not in line:
            continue
        job_id, state = line.split("|", 1)[:2]
        state = state.split("|", 1)[0].split()[0] if state.strip() else "UNKNOWN"
        if "." in job_id:  # a step (only without -X)
            continue
        base, _, task = job_id.partition("_")
        for task_id in _expand_task_ids(task) if task else [base]:
            states[task_id] = state
    return states


@dataclass
class SlurmCluster:
    """Handle on the running cluster: its environment and a few helpers."""

    prefix: Path
    env: dict[str, str] = field(repr=False)
    started_here: bool = True
    up_seconds: float = 0.0

    @property
    def conf(self) -> Path:
        return self.prefix / "etc" / "slurm.conf"

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 120, cwd: str | os.PathLike | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command (sbatch, squeue, sacct, scontrol, ...) against this cluster."""
        proc = subprocess.run(
            list(cmd),
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}\nstdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
            )
        return proc

    def sbatch(self, *args: str, cwd: str | os.PathLike | None = None, timeout: float = 120) -> str:
        """``sbatch --parsable ARGS``; returns the job id. Pass -o/--chdir to keep output out of the cwd."""
        out = self.run("sbatch", "--parsable", *args, cwd=cwd, timeout=timeout).stdout.strip()
        return out.splitlines()[-1].split(";")[0]

    def sacct_states(self, job_id: str | int, duplicates: bool = False) -> dict[str, str]:
        """{task_id: state} from ``sacct -j ID -n -P -o JobID,State -X`` (``-D`` if duplicates)."""
        cmd = ["sacct", "-j", str(job_id), "-n", "-P", "-o", "JobID,State", "-X"]
        if duplicates:
            cmd.append("-D")
        proc = self.run(*cmd, check=False)
        return parse_sacct_states(proc.stdout) if proc.returncode == 0 else {}

    def job_fields(self, job_id: str | int) -> dict[str, str]:
        """``scontrol show job -o ID`` as a dict ({} once the job has left slurmctld)."""
        proc = self.run("scontrol", "show", "job", "-o", str(job_id), check=False)
        if proc.returncode != 0:
            return {}
        line = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""
        return dict(m.groups() for m in re.finditer(r"(\w+(?::\w+)?)=(\S*)", line))

    def node_state(self) -> str:
        proc = self.run("sinfo", "-h", "-N", "-n", "localhost", "-o", "%T", check=False)
        return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else ""

    @staticmethod
    def wait_until(predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.25, what: str = "") -> T:
        return wait_until(predicate, timeout=timeout, interval=interval, what=what)

    @contextlib.contextmanager
    def environ(self) -> Iterator[None]:
        """Point os.environ at this cluster (for in-process clients: submitit, Hydra's launcher).

        Sets SLURM_CONF and PATH and hides the variables of an enclosing SLURM job; restores
        os.environ afterwards.
        """
        saved = dict(os.environ)
        try:
            for key in [k for k in os.environ if k.startswith(_JOB_ENV_PREFIXES)]:
                del os.environ[key]
            os.environ["SLURM_CONF"] = self.env["SLURM_CONF"]
            os.environ["PATH"] = self.env["PATH"]
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)


def cluster_env(prefix: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith(_JOB_ENV_PREFIXES)}
    env["SLURM_CONF"] = str(prefix / "etc" / "slurm.conf")
    path = env.get("PATH", "")
    extra = [p for p in ("/usr/sbin", "/usr/bin", "/sbin", "/bin") if p not in path.split(os.pathsep)]
    env["PATH"] = os.pathsep.join([*extra, path]) if path else os.pathsep.join(extra)
    return env


def _daemon_running(name: str, pidfile: Path, prefix: Path) -> bool:
    """Same test as the scripts: a live NAME process that slurm_up.sh started for PREFIX."""
    try:
        pid = int(pidfile.read_text().strip())
        proc = Path(f"/proc/{pid}")
        comm = (proc / "comm").read_text().strip()
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        args = (proc / "cmdline").read_bytes().split(b"\0")
        environ = (proc / "environ").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return False
    if comm != name or state in ("Z", "X"):
        return False
    mark = f"{prefix}/".encode()
    return any(mark in a for a in args) or f"OUTRO_SLURM_DAEMON={prefix}".encode() in environ


def all_daemons_running(prefix: Path) -> bool:
    return all(_daemon_running(name, prefix / rel, prefix) for name, rel in _DAEMONS.items())


def _missing_requirement() -> str | None:
    """Why this machine cannot have the cluster, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        uid = os.geteuid() if hasattr(os, "geteuid") else "unknown"
        return f"needs root to install the packages and start the SLURM daemons (running as uid {uid})"
    missing = [p for p in ("/etc/debian_version",) if not Path(p).exists()]
    missing += [tool for tool in ("apt-get", "dpkg-query", "bash") if shutil.which(tool) is None]
    if missing:
        return f"needs Debian with apt (missing: {', '.join(missing)})"
    return None


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _down(prefix: Path, log: Path) -> None:
    env = cluster_env(prefix)
    env["OUTRO_SLURM_DIR"] = str(prefix)
    with open(log, "a") as fh:
        subprocess.run(["bash", str(SLURM_DOWN)], env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=300, check=False)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A running single-node SLURM cluster with accounting (see the module docstring)."""
    if os.environ.get("OUTRO_SKIP_SLURM", "") not in ("", "0"):
        pytest.skip("SLURM cluster tests disabled by OUTRO_SKIP_SLURM")
    reason = _missing_requirement()
    if reason:
        pytest.skip(f"no SLURM cluster: {reason}")

    prefix = Path(os.environ.get("OUTRO_SLURM_DIR", DEFAULT_PREFIX))
    was_running = all_daemons_running(prefix)
    log = tmp_path_factory.mktemp("slurm_cluster") / "slurm_up_down.log"
    env = cluster_env(prefix)
    env["OUTRO_SLURM_DIR"] = str(prefix)
    env.setdefault("OUTRO_SLURM_MAX_ARRAY_SIZE", str(TEST_MAX_ARRAY_SIZE))
    t0 = time.monotonic()
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(
                ["bash", str(SLURM_UP)], env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=900, check=False
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = -1
    if rc != 0:
        text = _tail(log)
        if not was_running:
            _down(prefix, log)
        if rc in _EXIT_UNSUPPORTED:
            last = [line for line in text.splitlines() if "ERROR" in line]
            pytest.skip(f"no SLURM cluster: {_EXIT_UNSUPPORTED[rc]}: {last[-1] if last else text[-300:]}")
        pytest.fail(f"launchers/slurm_up.sh failed (exit {rc}); its output ({log}):\n{text}", pytrace=False)

    cluster = SlurmCluster(
        prefix=prefix, env=cluster_env(prefix), started_here=not was_running, up_seconds=time.monotonic() - t0
    )
    try:
        yield cluster
    finally:
        if cluster.started_here and os.environ.get("OUTRO_SLURM_KEEP", "") in ("", "0"):
            _down(prefix, log)
