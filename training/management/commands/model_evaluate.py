"""python manage.py model_evaluate MODEL --snapshot SHA [--split validation|train|all] [--queue]

Evaluates a reward model on a snapshot's ranked pairs and prints what the API's evaluation JSON
holds: accuracy (pairwise, ties excluded) with its 95% interval, pairs scored, pairs identical
after truncation, accuracy per import source. It runs in this process (a command the user waits
for), recorded as an evaluation the model page shows; --queue hands it to a worker instead.
"""
from __future__ import annotations

import json
import uuid

from django.core.management.base import BaseCommand, CommandError

from studio.errors import ValidationFailed
from studio.jobs import BrokerUnavailable
from training import evaluations
from training.management.commands.training_run import _model
from training.models import ModelEvaluation
from training.selectors import snapshot_by_hash_prefix


class Command(BaseCommand):
    help = "Evaluate a reward model on a dataset snapshot: pairwise accuracy with its interval."

    def add_arguments(self, parser):
        parser.add_argument("model", help="Id or name of the reward model.")
        parser.add_argument("--snapshot", required=True, help="The snapshot's sha256 (or its first 8+ characters).")
        parser.add_argument("--split", default="validation", choices=ModelEvaluation.Split.values)
        parser.add_argument("--queue", action="store_true", help="Queue it for a worker and print its id.")

    def handle(self, *args, **options):
        model = _model(options["model"])
        try:
            snapshot = snapshot_by_hash_prefix(options["snapshot"])
            if options["queue"]:
                evaluation = evaluations.model_evaluation_create(user=None, model=model, snapshot=snapshot,
                                                                 split=options["split"])
                self.stdout.write(str(evaluation.pk))
                return
            evaluations._check_reward_model(model)
        except (ValidationFailed, BrokerUnavailable) as exc:
            raise CommandError(getattr(exc, "message", str(exc))) from exc
        except Exception as exc:
            raise CommandError(str(exc)) from exc
        evaluation = ModelEvaluation.objects.create(model=model, snapshot=snapshot, split=options["split"],
                                                    celery_task_id=str(uuid.uuid4()))
        evaluation = evaluations.model_evaluation_execute(evaluation_id=evaluation.pk, worker="manage.py")
        if evaluation.status != ModelEvaluation.Status.SUCCEEDED:
            raise CommandError(f"Evaluation {evaluation.pk} {evaluation.status}: {evaluation.error}")
        r = evaluation.results
        low, high = r["accuracy_ci"]
        self.stderr.write(f"{model.name} on snapshot {snapshot.short_hash} ({evaluation.split}): accuracy "
                          f"{r['accuracy']:.3f} (95% CI {low:.3f}-{high:.3f}, {r['ci_method']}) over {r['pairs']} "
                          f"pairs of {r['prompts']} prompts; {r['identical_pairs']} pairs identical after truncation "
                          "left out.")
        for source, s in r["by_source"].items():
            self.stderr.write(f"  {source}: {s['accuracy']:.3f} over {s['pairs']} pairs")
        self.stdout.write(json.dumps({"id": evaluation.pk, "model": model.pk, "snapshot": snapshot.sha256,
                                      "split": evaluation.split, **r}, indent=2))
