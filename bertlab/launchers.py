"""Where an ablation's runs execute: ``--launcher local`` (this machine, ``--jobs N`` at a time) or ``slurm``.

A run is one arm × seed: a module-level function and its arguments (``Job``), so that it can be
sent to another process or a cluster node. Every launcher runs every job it is given and returns the
ones that failed with their log, so the caller can still build its table from the runs that finished.

* ``local`` with 1 job runs each run in this process, printing to this terminal (the first failure
  stops the ablation, as before). With ``--jobs N`` it keeps N runs going, each in a fresh child process
  (``python -m bertlab.launchers``); the ``--threads`` CPU threads are divided among them
  (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, which torch reads at start-up in every stage a run
  launches), and each run's output goes to its log.
* ``slurm`` submits one job per run through ``submitit`` (no hand-written sbatch) with the partition,
  GPUs, time and memory given, and waits for them. Its logs are submitit's, under ``ROOT/slurm``.
  ``BERTLAB_SUBMITIT_CLUSTER=local`` swaps in submitit's local executor (how the tests run it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from bertlab.core.errors import BertlabError
from bertlab.core.files import atomic_path, held_locks
from bertlab.core.lifetime import child_env, tie_to_starter


@dataclass
class Job:
    name: str
    fn: Callable  # module-level, so that it pickles by reference
    args: tuple
    log: str  # where a local worker writes the run's output
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Failure:
    name: str
    log: str
    error: str


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def thread_env(threads: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_job(job: Job, cwd: str, env: dict[str, str]):
    """Run ``job`` in this process, in ``cwd``, with ``env`` (and the job's own variables) set."""
    os.chdir(cwd)
    with _environ({**env, **job.env}):
        return job.fn(*job.args)


def _first_line(error: BaseException) -> str:
    return (str(error).strip() or type(error).__name__).splitlines()[0]


ERROR_PREFIX = "bertlab: error: "


def _child(path: str) -> int:
    """``python -m bertlab.launchers JOB.pkl``: one local run in a fresh process (no Lightning import needed)."""
    import pickle
    import traceback

    tie_to_starter()
    with open(path, "rb") as f:
        job, cwd = pickle.load(f)
    try:
        run_job(job, cwd, {})
    except Exception as e:  # noqa: BLE001 - the parent lists it with the log
        traceback.print_exc()
        print(ERROR_PREFIX + _first_line(e), file=sys.stderr, flush=True)
        return 1
    return 0


def _start(job: Job, env: dict[str, str]) -> int:
    """Run ``job`` in a child process with ``env``, its output (and its stages') appended to ``job.log``."""
    import pickle
    import subprocess

    os.makedirs(os.path.dirname(job.log), exist_ok=True)
    with atomic_path(job.log + ".job.pkl") as tmp, open(tmp, "wb") as f:
        pickle.dump((job, os.getcwd()), f)
    run_env = child_env({**os.environ, **env})  # it dies with this process
    run_env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    try:
        with open(job.log, "a") as log:
            cmd = [sys.executable, "-m", "bertlab.launchers", job.log + ".job.pkl"]
            run = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=run_env, pass_fds=held_locks())
            return run.returncode
    finally:
        os.remove(job.log + ".job.pkl")


def _error_in(log: str) -> str:
    with open(log, errors="replace") as f:
        lines = [line.rstrip("\n") for line in f if line.startswith(ERROR_PREFIX)]
    return lines[-1][len(ERROR_PREFIX) :] if lines else "see the log"


def run_local(jobs: list[Job], n_jobs: int = 1, threads: int | None = None) -> list[Failure]:
    if n_jobs <= 1:
        for job in jobs:
            print(f"[bertlab ablate] {job.name}: running", flush=True)
            run_job(job, os.getcwd(), {})
        return []
    from concurrent.futures import ThreadPoolExecutor, as_completed

    per_run = max(1, (threads or available_cpus()) // n_jobs)
    env = thread_env(per_run)
    failures = []
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:  # threads that wait on one child process each
        futures = {pool.submit(_start, job, env): job for job in jobs}
        print(f"[bertlab ablate] {len(jobs)} runs, {n_jobs} at a time, {per_run} thread(s) each", flush=True)
        for future in as_completed(futures):
            job, code = futures[future], future.result()
            if code != 0:
                failures.append(Failure(job.name, job.log, _error_in(job.log)))
            print(f"[bertlab ablate] {job.name}: {'failed' if code else 'done'} (log: {job.log})", flush=True)
    return failures


@dataclass
class Slurm:
    """What each run's SLURM job asks for."""

    partition: str | None = None
    gpus: int = 0
    cpus: int = 4
    time_min: int = 240
    mem_gb: float = 16.0


def slurm_executor(folder: str, resources: Slurm, cluster: str = "slurm"):
    """A submitit executor asking for ``resources``, its logs under ``folder/JOBID``."""
    import submitit

    executor = submitit.AutoExecutor(folder=os.path.join(folder, "%j"), cluster=cluster)
    executor.update_parameters(
        timeout_min=resources.time_min,
        mem_gb=resources.mem_gb,
        cpus_per_task=resources.cpus,
        gpus_per_node=resources.gpus,
        tasks_per_node=1,
        nodes=1,
        slurm_partition=resources.partition,
    )
    return executor


def _cluster() -> str:
    cluster = os.environ.get("BERTLAB_SUBMITIT_CLUSTER", "slurm")
    if cluster == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise BertlabError("--launcher slurm: no `sbatch`/`srun` on this machine; run it on a SLURM login node")
    return cluster


def run_slurm(jobs: list[Job], folder: str, resources: Slurm) -> list[Failure]:
    from submitit.helpers import as_completed

    cluster = _cluster()
    executor = slurm_executor(folder, resources, cluster)
    env = thread_env(resources.cpus)
    submitted = {}
    for job in jobs:
        executor.update_parameters(name=job.name.replace("/", "-"))
        handle = executor.submit(run_job, job, os.getcwd(), env)
        print(f"[bertlab ablate] {job.name}: submitted job {handle.job_id} (log: {handle.paths.stdout})", flush=True)
        submitted[handle.job_id] = (job, handle)
    failures = []
    poll_s = 1.0 if cluster == "local" else 15.0  # squeue is shared: do not hammer it
    for handle in as_completed([h for _, h in submitted.values()], poll_frequency=poll_s):
        job, _ = submitted[handle.job_id]
        error = handle.exception()
        if error is not None:
            lines = [line for line in str(error).splitlines() if line.strip()]  # a traceback: its last line says why
            failures.append(Failure(job.name, str(handle.paths.stderr), lines[-1].strip() if lines else repr(error)))
        print(f"[bertlab ablate] {job.name}: {'failed' if error else 'done'}", flush=True)
    return failures


def add_launcher_args(parser) -> None:
    group = parser.add_argument_group("where the runs execute")
    group.add_argument("--launcher", choices=["local", "slurm"], default="local", help="(default: local)")
    group.add_argument("--jobs", type=int, default=1, help="local: runs at a time, in worker processes (default: 1)")
    group.add_argument("--threads", type=int, help="local: CPU threads shared by the --jobs (default: all available)")
    group.add_argument("--partition", help="slurm: partition")
    group.add_argument("--gpus", type=int, default=0, help="slurm: GPUs per run (default: 0)")
    group.add_argument("--cpus", type=int, default=4, help="slurm: CPUs (and torch threads) per run (default: 4)")
    group.add_argument("--time", type=int, default=240, help="slurm: minutes per run (default: 240)")
    group.add_argument("--mem", type=float, default=16.0, help="slurm: GB of memory per run (default: 16)")


def launcher_from_args(ns) -> Callable[[list[Job], str], list[Failure]]:
    if ns.jobs < 1 or (ns.threads is not None and ns.threads < 1):
        raise BertlabError(f"--jobs and --threads must be at least 1, got {ns.jobs} and {ns.threads}")
    if ns.launcher == "slurm" and (ns.jobs != 1 or ns.threads is not None):
        raise BertlabError("--jobs and --threads are for --launcher local; on SLURM every run is a job with --cpus")
    if ns.launcher == "local":
        return lambda jobs, root: run_local(jobs, ns.jobs, ns.threads)
    _cluster()  # before any run is looked at
    resources = Slurm(ns.partition, ns.gpus, ns.cpus, ns.time, ns.mem)
    return lambda jobs, root: run_slurm(jobs, os.path.join(root, "slurm"), resources)


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
