"""One training run in one or several processes: the entry point `accelerate launch` starts.

    accelerate launch --multi_gpu --num_processes N -m training.ml.launch SPEC.json   # N GPUs
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N \\
        -m training.ml.launch SPEC.json                                            # N CPU processes
    python -m training.ml.launch SPEC.json                                         # one process

Why not `accelerate launch --cpu --num_processes N`: accelerate 1.x starts ONE process for it
(its "simple launcher"; several CPU processes need mpirun), measured here: the run is silently a
one-process run. `--multi_gpu` starts N processes through torchrun; ACCELERATE_USE_CPU=true makes
`Accelerator()` use them on the CPU (gloo). SPEC.json may name the process count it expects
("processes"): a launch that started another number of processes stops at once, saying so.

SPEC.json: the RunSpec fields (kind, base_path, config, output_dir, checkpoint_dir,
base_adapter_of, reward_model_path, reward_model_adapter_of) and

    snapshot_path   the snapshot file (JSONL: a header line, then one row per prompt)
    events_path     optional: the main process appends one JSON object a line here, flushed as it
                    happens, so that a parent process can follow the run (training.launcher):
                      {"event": "start", "processes", "device", "pid"}
                      {"event": "progress", "step", "total"}          (at most every PROGRESS_SECONDS)
                      {"event": "log", "record"}                      (each optimizer step)
                      {"event": "evaluate", "metrics"}
                      {"event": "checkpoint", "step", "path"}
                      {"event": "done", "output"}                     (RunOutput as JSON)
                      {"event": "error", "rank", "type", "message", ...}  (any process that fails)
    processes       optional: how many processes the launch must have
    watch_pid       optional: a process (the Celery worker) whose end stops this run: a worker
                    killed with SIGKILL leaves no training processes behind that would race the
                    worker that resumes its run. Each process also stops when its launcher (the
                    torchrun agent that started it) is gone (a watchdog thread: it works while
                    the process waits in a collective).

Every process also appends {"event": "process", "rank", "pid"} once it has joined the group, so a
parent can end them by pid if the launcher itself cannot (torchrun starts each in its own session).

Pure: no Django. Every process reads the same rows, loads the same weights (the trainer also
broadcasts rank 0's at the start) and takes its share of each step; only the main process
writes events, checkpoints and the saved model.
"""
from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

PROGRESS_SECONDS = 1.0  # progress events at most this often (a step's own events always go out)
WATCH_SECONDS = 2.0  # how often each process looks for the watched process and its launcher
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)  # others wait this long for the main process's evaluation/saving

SPEC_FIELDS = ("kind", "base_path", "config", "output_dir", "checkpoint_dir", "base_adapter_of", "reward_model_path",
               "reward_model_adapter_of")


def read_rows(path: Path):
    """A callable returning a fresh iterator over the snapshot file's rows (the header skipped)."""
    path = Path(path)

    def rows():
        with open(path, "rb") as f:
            f.readline()  # the header
            for line in f:
                if line.strip():
                    yield json.loads(line)

    return rows


class EventWriter:
    """Appends events as JSON lines, one write and flush each (the parent reads whole lines)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self._last_progress = float("-inf")
        self._last_step = None

    def write(self, event: str, **fields) -> None:
        if self.path is None:
            return
        line = json.dumps({"event": event, "time": round(time.time(), 3), **fields}, default=str) + "\n"
        # O_APPEND and one write: lines of different processes (error events) never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def progress(self, step: int, total: int) -> None:
        now = time.monotonic()
        if (step, total) == self._last_step and now - self._last_progress < PROGRESS_SECONDS:
            return
        self._last_progress, self._last_step = now, (step, total)
        self.write("progress", step=step, total=total)


def _watchdog(pid: int | None, events: EventWriter, rank: int) -> None:
    """A daemon thread that ends this process once the watched process (the worker) or its
    launcher (the torchrun agent; torchrun starts each process in its own session, so nothing
    else ends it with its launcher) is gone -- looked at every WATCH_SECONDS, even while this
    process waits in a collective for a peer that will never come."""
    import threading

    launcher = os.getppid() if os.environ.get("TORCHELASTIC_RUN_ID") else None

    def gone() -> str | None:
        if launcher is not None and os.getppid() != launcher:
            return f"the launcher of this process ({launcher}) is gone"
        if pid:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return f"the process that started this run ({pid}) is gone"
            except PermissionError:
                pass
        return None

    def watch() -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            reason = gone()
            if reason:
                events.write("error", rank=rank, type="Orphaned", message=f"Stopped: {reason}.")
                os._exit(3)

    if launcher is not None or pid:
        threading.Thread(target=watch, name="launch-watchdog", daemon=True).start()


def _hooks(events: EventWriter, is_main: bool):
    from training.ml.trainer import Hooks

    if not is_main:
        return Hooks()
    return Hooks(log=lambda record: events.write("log", record=record),
                 evaluate=lambda metrics: events.write("evaluate", metrics=metrics),
                 checkpoint=lambda step, path: events.write("checkpoint", step=step, path=str(path)),
                 progress=events.progress, say=lambda line: events.write("say", line=line))


def output_as_json(out, *, processes: int) -> dict:
    """What a parent needs of a RunOutput (training.launcher rebuilds one from it)."""
    result = out.result
    return {"config": out.config.as_dict(), "data": out.data, "output_dir": str(out.output_dir),
            "metrics": out.metrics, "adapter": out.adapter,
            "device": out.device if processes == 1 else f"{out.device} x{processes} processes", "reward_offset": out.reward_offset,
            "win_rate": out.win_rate,
            "seconds": out.seconds, "processes": processes,
            "result": {"steps": result.steps, "total_steps": result.total_steps,
                       "resumed_from": result.resumed_from, "final_metrics": result.final_metrics,
                       "seconds": round(result.seconds, 3), "replica_difference": result.replica_difference}}


def error_fields(exc: BaseException) -> dict:
    """An exception as JSON the parent maps back to the failures training explains
    (training.runs._failure_message): the type's name, message, errno, a config field."""
    fields = {"type": type(exc).__name__, "message": str(exc)}
    if getattr(exc, "errno", None) is not None:
        fields["errno"] = exc.errno
    if hasattr(exc, "field") and hasattr(exc, "message"):
        fields["field"], fields["message"] = exc.field, exc.message
    return fields


def free_port() -> int:
    """A TCP port nobody listens on now (for the process group's rendezvous): two launches on
    one machine must not both take accelerate's default 29500."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(spec_path: Path, *, processes: int, cpu: bool, port: int | None = None) -> tuple[list[str], dict]:
    """(argv, environment to add) that run SPEC.json in `processes` processes through
    `accelerate launch`: on GPUs one process per GPU (NCCL), on the CPU `processes` processes
    (gloo). Our flags win over an `accelerate config` file's distributed type (so a DeepSpeed or
    FSDP default never changes what this trainer does); its gpu_ids still apply."""
    binary = Path(sys.executable).with_name("accelerate")
    argv = [str(binary), "launch"] if binary.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    argv += ["--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
             "--dynamo_backend", "no"]
    env = {}
    if processes > 1:
        # torchrun, one process per rank. (`--cpu` would start one process: see the docstring.)
        argv += ["--multi_gpu", "--main_process_port", str(port or free_port())]
    if cpu:
        env["ACCELERATE_USE_CPU"] = "true"
        if processes == 1:
            argv.append("--cpu")
    argv += ["-m", "training.ml.launch", str(spec_path)]
    return argv, env


def stop(proc, pids: dict[int, int] | list[int], *, grace: float = 30.0) -> None:
    """End a launch started by `launch_command` (as subprocess.Popen with start_new_session):
    SIGTERM to the launcher, which passes it on to its processes and waits for them; SIGKILL
    after `grace` seconds; then any training process still alive, by the pid it announced in
    its "process" event (each leads its own session, so its group is it alone)."""
    import signal
    import subprocess

    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    for pid in (pids.values() if isinstance(pids, dict) else pids):
        if _is_training_process(pid):
            _signal_group(pid, signal.SIGKILL)


def _is_training_process(pid: int) -> bool:
    """Whether `pid` is still one of ours (not a pid the system has since given to another program)."""
    try:
        return b"training.ml.launch" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: accelerate launch [options] -m training.ml.launch SPEC.json", file=sys.stderr)
        return 2
    spec_json = json.loads(Path(argv[0]).read_text())
    events = EventWriter(spec_json.get("events_path"))
    rank = int(os.environ.get("RANK", "0"))
    try:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs

        # On a machine without a GPU the processes are CPU processes (gloo) even when the launch
        # forgot ACCELERATE_USE_CPU: otherwise each would think it is alone and all would write.
        cpu = not torch.cuda.is_available()
        accelerator = Accelerator(cpu=cpu, kwargs_handlers=[InitProcessGroupKwargs(timeout=PROCESS_GROUP_TIMEOUT)])
        rank = accelerator.process_index
        events.write("process", rank=rank, pid=os.getpid())
        _watchdog(spec_json.get("watch_pid"), events, rank)
        expected = spec_json.get("processes")
        if expected and int(expected) != accelerator.num_processes:
            raise RuntimeError(
                f"This launch has {accelerator.num_processes} process(es), not the {expected} asked for. "
                "`accelerate launch --cpu` starts one process whatever --num_processes says: use "
                "ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N.")
        run = _run(spec_json, accelerator, events)
        accelerator.wait_for_everyone()
        if accelerator.num_processes > 1:
            torch.distributed.destroy_process_group()
        return run
    except BaseException as exc:
        events.write("error", rank=rank, **error_fields(exc))
        raise


def _run(spec_json: dict, accelerator, events: EventWriter) -> int:
    from training.ml.run import RunSpec, run_training

    is_main = accelerator.is_main_process
    spec = RunSpec(**{k: spec_json.get(k) for k in SPEC_FIELDS})
    if is_main:
        events.write("start", processes=accelerator.num_processes, device=str(accelerator.device), pid=os.getpid())
    hooks = _hooks(events, is_main)
    out = run_training(spec, read_rows(Path(spec_json["snapshot_path"])), hooks=hooks, accelerator=accelerator)
    if is_main:
        events.write("done", output=output_as_json(out, processes=accelerator.num_processes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
