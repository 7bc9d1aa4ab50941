"""python manage.py dataset_snapshot --project SLUG [filters]

Freezes a project's labels as a dataset snapshot (as the system: no user) and prints its sha256
alone on standard output, so scripts can capture it: `SHA=$(manage.py dataset_snapshot --project p)`.
What it made (or that the same snapshot already existed) goes to standard error. It runs in this
process and has finished when it returns (the pages and the API hand snapshots to a worker as
snapshot jobs: training.snapshot_jobs).
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from labeling.models import Project
from studio.errors import ValidationFailed
from training.snapshots import snapshot_create, snapshot_spec_clean


class Command(BaseCommand):
    help = "Freeze a project's labels as an immutable dataset snapshot; prints its sha256."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Slug of the project.")
        parser.add_argument("--from", dest="created_from", help="Labels made on or after this date/datetime.")
        parser.add_argument("--to", dest="created_to", help="Labels made up to this date (inclusive) or datetime.")
        parser.add_argument("--min-agreement", type=float, help="Keep rankings of prompts whose annotators agree "
                                                                "on at least this share of pairs (0..1).")
        parser.add_argument("--exclude-flagged-candidates", action="store_true",
                            help="Leave out candidates the safety screen flagged.")
        parser.add_argument("--exclude-flagged-labels", action="store_true",
                            help="Leave out rankings that flag a candidate or mark all answers bad.")
        parser.add_argument("--exclude-imported", action="store_true", help="Leave out imported data.")
        parser.add_argument("--validation-fraction", type=float, help="Share of prompts in validation (default 0.1).")
        parser.add_argument("--split-seed", type=int, help="Seed of the deterministic split (default 0).")

    def handle(self, *args, **options):
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project']!r}.")
        spec = {key: options[key] for key in ("created_from", "created_to", "min_agreement",
                                              "exclude_flagged_candidates", "exclude_flagged_labels",
                                              "exclude_imported", "validation_fraction", "split_seed")
                if options[key] not in (None, False)}
        try:
            filters, split = snapshot_spec_clean(spec)
            snapshot, created = snapshot_create(user=None, project=project, filters=filters, split=split)
        except ValidationFailed as exc:
            raise CommandError(exc.message) from exc
        counts = ", ".join(f"{k} {v}" for k, v in snapshot.counts.items())
        self.stderr.write(f"{'Created' if created else 'Already existed:'} snapshot of {project.slug} "
                          f"({counts}; train {snapshot.split.get('train')}, validation "
                          f"{snapshot.split.get('validation')}) at {snapshot.file_path}")
        self.stdout.write(snapshot.sha256)
