"""python manage.py training_run --kind reward --base MODEL --snapshot SHA [--config JSON] [--wait]

Starts a training run as the system, as the API's POST /api/v1/training-runs/ does for an admin:
the run is queued for a worker of the `training` queue and its id printed on standard output.
--wait follows its progress until it ends (Ctrl-C stops following, not the run);
--foreground runs it in this process instead (a GPU box without a worker, a debugging session).
"""
from __future__ import annotations

import json
import time

from django.core.management.base import BaseCommand, CommandError

from modelhub.models import ModelArtifact
from studio.errors import ValidationFailed
from studio.jobs import BrokerUnavailable
from training import runs
from training.models import TrainingRun
from training.selectors import snapshot_by_hash_prefix


class Command(BaseCommand):
    help = "Start a training run (sft, reward or dpo) of a model on a dataset snapshot."

    def add_arguments(self, parser):
        parser.add_argument("--kind", required=True, choices=[str(k) for k in runs.AVAILABLE_KINDS])
        parser.add_argument("--base", required=True, help="Id or name of the model to start from.")
        parser.add_argument("--snapshot", required=True, help="The snapshot's sha256 (or its first 8+ characters).")
        parser.add_argument("--reward-model", default=None,
                            help="dpo: id or name of a reward model that judges the trained policy (win rate).")
        parser.add_argument("--config", default="{}", help='Settings as JSON, e.g. \'{"epochs": 2}\'; the rest '
                                                           "take their defaults.")
        parser.add_argument("--wait", action="store_true", help="Follow the run until it ends.")
        parser.add_argument("--foreground", action="store_true", help="Run it in this process (no worker).")

    def handle(self, *args, **options):
        base = _model(options["base"])
        judge = _model(options["reward_model"]) if options["reward_model"] else None
        try:
            snapshot = snapshot_by_hash_prefix(options["snapshot"])
            config = json.loads(options["config"])
        except ValueError as exc:
            raise CommandError(f"--config is not JSON: {exc}") from exc
        except Exception as exc:
            raise CommandError(str(exc)) from exc
        if options["foreground"]:
            run = self._foreground(options["kind"], base, snapshot, config, judge)
        else:
            try:
                run = runs.training_run_create(user=None, kind=options["kind"], base_model=base, snapshot=snapshot,
                                               config=config, reward_model=judge)
            except ValidationFailed as exc:
                raise CommandError(exc.message) from exc
            except BrokerUnavailable as exc:
                raise CommandError(str(exc)) from exc
            self.stderr.write(f"Queued training run {run.pk} ({run.kind} of {base.name} on snapshot "
                              f"{snapshot.short_hash}) for a worker of the `training` queue.")
            self.stdout.write(str(run.pk))
            if options["wait"]:
                run = self._follow(run)
        if options["wait"] or options["foreground"]:
            self._report(run)

    def _foreground(self, kind, base, snapshot, config, judge) -> TrainingRun:
        try:
            run = runs.training_run_create(user=None, kind=kind, base_model=base, snapshot=snapshot, config=config,
                                           reward_model=judge, enqueue=False)
        except ValidationFailed as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(str(run.pk))
        self.stderr.write(f"Training run {run.pk} runs in this process; Ctrl-C stops it (it resumes from its last "
                          "checkpoint when started again).")
        return runs.training_run_execute(run_id=run.pk, worker="manage.py")

    def _follow(self, run: TrainingRun) -> TrainingRun:
        last = None
        while not run.is_finished:
            time.sleep(2)
            run.refresh_from_db()
            line = f"{run.status}: step {run.step}/{run.total_steps}" + (
                f", ETA {run.eta_seconds:.0f} s" if run.eta_seconds else "")
            if line != last:
                self.stderr.write(line)
                last = line
        return run

    def _report(self, run: TrainingRun) -> None:
        run.refresh_from_db()
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(f"Training run {run.pk} {run.status}: {run.error}")
        shown = {k: v for k, v in run.metrics.items() if isinstance(v, (int, float))}
        self.stderr.write(f"Training run {run.pk} succeeded: model {run.model.name} (id {run.model_id}); "
                          + ", ".join(f"{k} {v:.4g}" for k, v in sorted(shown.items())))


def _model(value: str) -> ModelArtifact:
    model = ModelArtifact.objects.filter(pk=int(value)).first() if value.isdigit() else \
        ModelArtifact.objects.filter(name=value).first()
    if model is None:
        raise CommandError(f"No model {value!r} (give its id or name; `manage.py model_import` registers one).")
    return model
