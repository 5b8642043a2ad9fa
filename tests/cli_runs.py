"""What the tests that run the package share: the package's source folder, the environment of a subprocess
(the package importable, one thread per process), a config dict as ``--set`` flags, the ways to run it — in
this process (:func:`train_here`, :func:`cli`), as a command (:func:`command`, optionally under torchrun) or
as ranks started by hand (:func:`spawn_ranks`) — and what is checked of the result (:func:`one_line`,
:func:`tree`)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import largemeta

SRC = str(Path(largemeta.__file__).resolve().parents[1])


def env(**extra: str) -> dict[str, str]:
    """This environment, with the package importable and one thread per process, plus ``extra``."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def sets(cfg: dict) -> list[str]:
    """A config dict (but its ``steps``, which the commands take as a flag) as ``--set KEY=VALUE`` flags."""
    return [a for k, v in cfg.items() if k != "steps" for a in ("--set", f"{k}={v}")]


def train_here(cfg: dict, out, resume: bool = False):
    """Train the config dict ``cfg`` into ``out`` in this process (no progress bar): ``(trainer, what its
    run() returned)``, the trainer closed whether the run finished or raised."""
    from largemeta.train.config import from_mapping
    from largemeta.train.trainer import Trainer

    trainer = Trainer(from_mapping(cfg), out, resume=resume, progress=False)
    try:
        return trainer, trainer.run()
    finally:
        trainer.close()


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``largemeta ARGV`` in this process: its exit code, stdout and stderr."""
    from largemeta.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def command(
    args: list[str], nproc: int = 1, timeout: float | None = 300, check: bool = True
) -> subprocess.CompletedProcess:
    """``largemeta ARGS`` in a subprocess — under torchrun with ``nproc`` ranks on this host when
    ``nproc > 1`` — with :func:`env`, its output captured; ``check``: it must exit 0 (else the tail of its
    stderr is the failure)."""
    cmd = [sys.executable, "-m", "largemeta", *args]
    if nproc > 1:
        torchrun = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
        ]
        cmd = [*torchrun, "-m", "largemeta", *args]
    out = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def free_port() -> int:
    """A loopback port free just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(
    cmd: list[str], world: int = 2, collective_timeout: int = 20, stdout=subprocess.PIPE
) -> list[subprocess.Popen]:
    """Every rank of a ``world``-rank gloo run of ``cmd`` started by hand (not torchrun, which would stop
    the survivors itself), their stderr piped; ``LARGEMETA_COLLECTIVE_TIMEOUT`` is ``collective_timeout``."""
    port = free_port()
    procs = []
    for rank in range(world):
        rank_env = env(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            LARGEMETA_COLLECTIVE_TIMEOUT=str(collective_timeout),
        )
        procs.append(subprocess.Popen(cmd, env=rank_env, stdout=stdout, stderr=subprocess.PIPE, text=True))
    return procs


def one_line(code: int, err: str, *needles: str) -> bool:
    """Assert a refusal: exit code 2, exactly one line on stderr, no traceback, every needle in it (True,
    so ``assert one_line(...)`` reads as well)."""
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return True


def tree(root: Path, locks: bool = True) -> dict[str, str]:
    """Every file under ``root`` (relative path) with its sha256 — what "unchanged, byte for byte" compares;
    ``locks=False`` leaves out the ``.lock`` files (a writer's lock may come and go)."""
    root = Path(root)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (locks or not p.name.endswith(".lock"))
    }
