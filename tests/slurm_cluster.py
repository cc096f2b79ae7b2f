"""A real single-node SLURM cluster on 127.0.0.1 for tests: munged, slurmctld, slurmd.

Everything lives under one folder (``slurm.conf``, munge key and socket, state, spool,
logs); the client commands find the cluster through ``SLURM_CONF`` in :meth:`env`. No
systemd, no files outside that folder: the daemons run in the foreground as children
of the test process and :meth:`LoopbackSlurm.stop` ends exactly those PIDs.

Debian's ``slurm-wlm`` and ``munge`` packages are installed with apt-get when missing
(:func:`ensure_slurm_installed`); a machine that cannot install them (not root, no
apt-get) raises :class:`SlurmUnavailable`, which tests turn into a skip with its reason.

There is no slurmdbd, so ``sacct`` does not work: Snakemake's SLURM executor must poll
with ``squeue`` (``--slurm-status-command squeue``), which sees finished jobs for
``MinJobAge`` seconds (600 here; the plugin wants ≥ 3 × its first status interval).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

#: binaries the cluster needs (daemons live in /usr/sbin on Debian)
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol",
            "scancel")
PACKAGES = ("slurm-wlm", "munge")
SBIN_PATH = os.pathsep.join(["/usr/local/sbin", "/usr/sbin", "/sbin"])
#: unix socket paths longer than this do not fit sockaddr_un (108 bytes with the NUL)
MAX_SOCKET_PATH = 100


class SlurmUnavailable(RuntimeError):
    """This machine cannot run a test SLURM (the message says why)."""


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), SBIN_PATH]))


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if _which(b) is None]


def ensure_slurm_installed(timeout: float = 900) -> None:
    """Install slurm-wlm and munge with apt-get when their binaries are missing.

    Raises SlurmUnavailable when they are missing and this machine cannot install
    packages (not root, or no apt-get), RuntimeError when apt-get itself fails.
    """
    missing = missing_binaries()
    if not missing:
        return
    why = f"SLURM binaries {missing} not installed"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise SlurmUnavailable(f"{why}, and installing {' '.join(PACKAGES)} needs root")
    apt = _which("apt-get")
    if apt is None:
        raise SlurmUnavailable(f"{why}, and there is no apt-get to install {' '.join(PACKAGES)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in ([apt, "update"], [apt, "install", "-y", "--no-install-recommends", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    still = missing_binaries()
    if still:
        raise RuntimeError(f"apt-get installed {PACKAGES} but {still} are still not on PATH")


def _free_ports(n: int) -> list[int]:
    """n distinct TCP ports free on 127.0.0.1 right now (the OS picks them)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def node_line(hostname: str) -> str:
    """``NodeName=...`` of this machine from ``slurmd -C`` (real CPUs and memory)."""
    out = subprocess.run([_which("slurmd"), "-C"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=60, check=True).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("NodeName=")), None)
    if line is None:
        raise RuntimeError(f"slurmd -C printed no NodeName line:\n{out}")
    return re.sub(r"^NodeName=\S+", f"NodeName={hostname} NodeAddr=127.0.0.1", line.strip())


class LoopbackSlurm:
    """One-node SLURM cluster under ``root``; use as a context manager or start()/stop().

    Attributes: ``conf`` (slurm.conf), ``partition`` (its only, default, partition),
    ``bin_dir`` (put first on PATH, see :meth:`env`), ``root``.
    """

    def __init__(self, root: Path, partition: str = "r2vtest", min_job_age_s: int = 600):
        self.root = Path(root).resolve()
        self.partition = partition
        self.min_job_age_s = min_job_age_s
        self.conf = self.root / "slurm.conf"
        self.bin_dir = self.root / "bin"
        self.socket = self.root / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}
        self.host = socket.gethostname().split(".")[0]

    # --- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> "LoopbackSlurm":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        """Write the configuration, start munged, slurmctld and slurmd; wait until idle."""
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            raise ValueError(f"{self.socket}: munge socket path longer than "
                             f"{MAX_SOCKET_PATH} characters; use a shorter cluster root")
        for sub in ("munge", "state", "spool", "log", "bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        try:
            self._start_munge()
            self._write_conf()
            self._write_srun_shim()
            env = self.env()
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-c", "-i"], env)
            self._spawn("slurmd", [_which("slurmd"), "-D"], env)
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 20) -> None:
        """Cancel this cluster's jobs, then end the daemons this object started (by PID)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run([_which("scancel"), "--partition", self.partition, "--full"],
                           env=self.env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.squeue(states="RUNNING,COMPLETING"):
                time.sleep(0.5)
        # reverse start order: slurmd, slurmctld, munged
        for name in reversed(list(self.procs)):
            proc = self.procs.pop(name)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=timeout)
            log = getattr(proc, "_r2v_log", None)
            if log is not None:
                log.close()

    # --- use ---------------------------------------------------------------------
    def env(self, base: dict | None = None) -> dict:
        """``base`` (default os.environ) with SLURM_CONF set and the srun shim first on PATH."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", ""), SBIN_PATH])
        return env

    def squeue(self, states: str = "all") -> list[tuple[str, str, str]]:
        """(job id, name, state) of this cluster's jobs (finished ones for MinJobAge s)."""
        out = subprocess.run([_which("squeue"), "--noheader", f"--states={states}",
                              "--format=%i|%j|%T"], env=self.env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=30).stdout
        return [tuple(ln.split("|", 2)) for ln in out.splitlines() if ln.count("|") == 2]

    def logs(self, tail: int = 40) -> str:
        """The last lines of every daemon log, for failure messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {path}\n" + "\n".join(lines))
        return "\n".join(parts)

    # --- internals ---------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], env: dict) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        proc._r2v_log = log
        self.procs[name] = proc

    def _start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            # munged wants a key readable by its user only; 1024 random bytes as mungekey
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(1024))
        d = self.root / "munge"
        # --force: the socket's parent folders (pytest's 0700 tmp dirs) are not
        # world-executable; only root's processes use this socket
        self._spawn("munged", [
            _which("munged"), "--foreground", "--force", f"--socket={self.socket}",
            f"--key-file={key}", f"--pid-file={d / 'munged.pid'}",
            f"--log-file={self.root / 'log' / 'munged.log'}", f"--seed-file={d / 'munged.seed'}",
        ], dict(os.environ))
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            if self.procs["munged"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"munged did not start:\n{self.logs()}")
            time.sleep(0.1)

    def _write_conf(self) -> None:
        ctld_port, slurmd_port = _free_ports(2)
        r = self.root
        self.conf.write_text("\n".join([
            "ClusterName=r2vtest",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "MailProg=/bin/true",
            # finished jobs stay visible to squeue this long (the executor's status source)
            f"MinJobAge={self.min_job_age_s}",
            "ReturnToService=2",
            "KillWait=5",
            node_line(self.host) + " State=UNKNOWN",
            f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def _write_srun_shim(self) -> None:
        # snakemake-executor-plugin-slurm-jobstep drops every SLURM_* variable, SLURM_CONF
        # included, before its srun (snakemake-executor-plugin-slurm issue #164); a real
        # node finds /etc/slurm/slurm.conf instead, which a test must not write
        shim = self.bin_dir / "srun"
        shim.write_text(f'#!/bin/sh\nexport SLURM_CONF="{self.conf}"\nexec "{_which("srun")}" "$@"\n')
        shim.chmod(0o755)

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.logs()}")
            proc = subprocess.run([_which("sinfo"), "--noheader", "--format=%T"],
                                  env=self.env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=30)
            state = proc.stdout.strip()
            if proc.returncode == 0 and state == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"the SLURM node is not idle after {timeout:.0f} s "
                           f"(sinfo: {state!r}):\n{self.logs()}")
