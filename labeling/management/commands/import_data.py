"""python manage.py import_data FILE --project SLUG --format FORMAT

Imports a file as the system (no user), in this process (the import is recorded as a job like
the ones the pages and the API queue, and it is finished when the command returns), and prints
what it created and every bad row. Bad rows
do not make it fail while others were imported: it exits non-zero only when it cannot start
(unknown project or format, a file it cannot open) or when nothing in the file could be
imported (status "failed": the wrong file, or the wrong format for it), so a script notices.
"""
from __future__ import annotations

import os

from django.core.management.base import BaseCommand, CommandError

from labeling.importers import IMPORT_FORMATS, import_run_error_lines, import_run_in_process
from labeling.models import ImportRun, Project


class Command(BaseCommand):
    help = "Import prompts, demonstrations, candidates and rankings from a file (formats: docs/imports.md)."

    def add_arguments(self, parser):
        parser.add_argument("file", help="Path of the file to import.")
        parser.add_argument("--project", required=True, help="Slug of the project to import into.")
        parser.add_argument("--format", required=True, help=f"One of: {', '.join(IMPORT_FORMATS)}.")

    def handle(self, *args, **options):
        path, slug, format_name = options["file"], options["project"], options["format"]
        if format_name not in IMPORT_FORMATS:
            raise CommandError(f"Unknown format {format_name!r}; use one of {', '.join(IMPORT_FORMATS)}.")
        project = Project.objects.filter(slug=slug).first()
        if project is None:
            raise CommandError(f"No project with slug {slug!r}.")
        try:
            stream = open(path, "rb")  # closed by the with below; errors inside the import are not "cannot read"
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
        with stream:
            run = import_run_in_process(project=project, user=None, stream=stream,
                                        filename=os.path.basename(path), format=format_name)

        # A fixed order: PostgreSQL's jsonb does not keep the order the counts were written in.
        order = ["rows", "prompts", "demonstrations", "candidates", "rankings", "unchanged"]
        keys = [key for key in order if key in run.counts] + [key for key in run.counts if key not in order]
        counts = ", ".join(f"{key} {run.counts[key]}" for key in keys)
        self.stdout.write(f"Import {run.pk} of {path} into {project.slug} ({run.format}): {run.result}.")
        self.stdout.write(f"  {counts}")
        lines = import_run_error_lines(run=run)
        if lines:
            self.stdout.write("  Problems:")
            for line in lines:
                self.stdout.write(f"    {line}")
        if run.status == ImportRun.Status.FAILED:
            if not lines:  # the run broke (its error says how), not the file
                raise CommandError(f"Import {run.pk} of {path} failed: {run.error}")
            raise CommandError(f"Nothing could be imported from {path} as {run.format}; the first problem: "
                               f"{lines[0]}")
