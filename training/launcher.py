"""A training run in several processes, started from the worker that runs it.

    run_in_processes(run, spec, snapshot_path, processes, hooks)  ->  RunOutput

What `training.ml.run.run_training` does in the worker's own process, done by
`accelerate launch ... -m training.ml.launch SPEC.json` (one process per GPU, or N CPU
processes): this writes SPEC.json into the run's folder, starts the launch, follows the events
its main process appends, and replays each into `hooks` -- so `training.runs._RunHooks` writes
metrics, progress and heartbeats exactly as in-process, and a cancel (JobCancelled raised by a
hook) ends the processes. It returns the RunOutput that the main process described.

The worker also calls `hooks.progress` while the processes say nothing (loading a model): its
heartbeat keeps going and a cancel is seen within a poll. The processes watch this worker's pid:
a worker killed with SIGKILL leaves no training behind to race the worker that resumes the run.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from training.ml.run import RunOutput, RunSpec, TrainingDataError
from training.ml.trainer import Hooks, TrainResult

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.2  # how often the events file is read
STOP_SECONDS = 30.0  # how long the launcher gets to end its processes after SIGTERM before SIGKILL
LOG_TAIL_LINES = 15  # lines of the processes' output quoted in an unexpected failure


class LaunchFailed(RuntimeError):
    """The training processes ended without a model, for a reason training does not explain."""


class EventFollower:
    """The complete JSON lines appended to a file since the last read."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.partial = b""

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()  # b"" after a complete line
        return [json.loads(line) for line in lines if line.strip()]


def _use_cpu() -> bool:
    import torch
    from django.conf import settings

    device = (getattr(settings, "STUDIO_DEVICE", "") or "").strip().lower()
    return device.startswith("cpu") or not torch.cuda.is_available()


def run_in_processes(run, spec: RunSpec, snapshot_path: Path, processes: int, hooks: Hooks, *,
                     cpu: bool | None = None) -> RunOutput:
    """Train `spec` on the snapshot file in `processes` processes (on the CPU when `cpu`, by
    default when STUDIO_DEVICE says "cpu" or there is no GPU) and return what run_training would
    have. The files of the launch (SPEC.json, events, the processes' output) are in
    `run.run_dir / "launch"`. Raises what run_training raises for data, config, memory and disk
    failures; LaunchFailed (with the output's tail) for the rest."""
    from training.ml.launch import launch_command, stop

    cpu = _use_cpu() if cpu is None else cpu
    folder = Path(run.run_dir) / "launch"
    folder.mkdir(parents=True, exist_ok=True)
    spec_path, events_path, output_path = folder / "spec.json", folder / "events.jsonl", folder / "processes.log"
    events_path.unlink(missing_ok=True)  # a fresh file per attempt: a resumed run starts reading at its start
    spec_path.write_text(json.dumps({**asdict(spec), "snapshot_path": str(snapshot_path),
                                     "events_path": str(events_path), "processes": processes,
                                     "watch_pid": os.getpid()}, indent=1))
    argv, env = launch_command(spec_path, processes=processes, cpu=cpu)
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **env, "PYTHONPATH": path}
    log.info("Training run %s in %d %s processes: %s", getattr(run, "pk", "?"), processes, "CPU" if cpu else "GPU",
             " ".join(argv))
    with open(output_path, "wb") as output:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    follower = EventFollower(events_path)
    pids: dict[int, int] = {}
    history: list[dict] = []
    done = error = None
    step = total = 0
    try:
        while True:
            exited = proc.poll() is not None  # before reading: every line written before the exit is read
            for event in follower.read():
                kind = event["event"]
                if kind == "progress":
                    step, total = event["step"], event["total"]
                    hooks.progress(step, total)
                elif kind == "log":
                    history.append(event["record"])
                    hooks.log(event["record"])
                elif kind == "evaluate":
                    hooks.evaluate(event["metrics"])
                elif kind == "checkpoint":
                    hooks.checkpoint(event["step"], Path(event["path"]))
                elif kind == "say":
                    hooks.say(event["line"])
                elif kind == "process":
                    pids[event["rank"]] = event["pid"]
                elif kind == "done":
                    done = event["output"]
                elif kind == "error" and error is None:
                    error = event  # the first: the others are usually peers losing their connection to it
            if exited:
                break
            hooks.progress(step, total)  # the heartbeat while the processes are quiet; a cancel raises here
            time.sleep(POLL_SECONDS)
    except BaseException:
        stop(proc, pids, grace=STOP_SECONDS)
        raise
    if done is not None:
        if proc.returncode:
            log.warning("The training processes of run %s exited with %s after saving the model.",
                        getattr(run, "pk", "?"), proc.returncode)
        return _output(spec, done, history)
    stop(proc, pids, grace=STOP_SECONDS)  # the launcher is gone; a process it left would be killed here
    raise _failure(error, proc.returncode, output_path)


def _output(spec: RunSpec, done: dict, history: list[dict]) -> RunOutput:
    from training.ml.config import config_from_dict

    result = done["result"]
    difference = result.get("replica_difference")
    if difference:
        log.warning("The training processes ended with weights %.3g apart; the main process's were saved.",
                    difference)
    return RunOutput(
        config=config_from_dict(spec.kind, done["config"]),
        result=TrainResult(steps=result["steps"], total_steps=result["total_steps"],
                           resumed_from=result["resumed_from"], final_metrics=result["final_metrics"],
                           history=history, seconds=result["seconds"], replica_difference=difference),
        data=done["data"], output_dir=Path(done["output_dir"]), metrics=done["metrics"], device=done["device"],
        adapter=done["adapter"], reward_offset=done["reward_offset"], win_rate=done.get("win_rate"), seconds=done["seconds"])


def _failure(error: dict | None, returncode: int | None, output_path: Path) -> BaseException:
    """The exception the in-process run would have raised, where training explains it
    (training.runs._failure_message); else LaunchFailed with what the processes printed."""
    import torch

    from training.ml.config import ConfigError

    if error is not None:
        kind, message = error.get("type"), error.get("message", "")
        if kind == "TrainingDataError":
            return TrainingDataError(message)
        if kind == "PolicyDiverged":
            from training.ml.ppo import PolicyDiverged

            return PolicyDiverged(message)
        if kind == "ConfigError" and error.get("field"):
            return ConfigError(error["field"], message)
        if kind == "OutOfMemoryError":
            return torch.OutOfMemoryError(message)
        if kind == "MemoryError":
            return MemoryError(message)
        if error.get("errno") == 28:
            return OSError(28, message)
        return LaunchFailed(f"{kind} in training process {error.get('rank', '?')}: {message} "
                            f"(output: {output_path})")
    tail = ""
    if output_path.exists():
        lines = output_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        tail = "\n" + "\n".join(lines)
    return LaunchFailed(f"The training processes exited with code {returncode} before saving a model "
                        f"(output: {output_path}).{tail}")
