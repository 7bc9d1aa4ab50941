"""Data imports: files of prompts, demonstrations, candidates and rankings in three formats
(self-instruct, fgrlhf, jsonl; see docs/imports.md). The API and the pages call
`import_run_create` (a job on the `default` queue), the import_data command and the demo
bootstrap `import_run_in_process`; each format lives in its own module."""
from labeling.importers.formats import IMPORT_FORMATS
from labeling.importers.run import (
    import_run_cancel,
    import_run_create,
    import_run_error_lines,
    import_run_execute,
    import_run_in_process,
    import_runs_recover,
)

__all__ = ["IMPORT_FORMATS", "import_run_cancel", "import_run_create", "import_run_error_lines", "import_run_execute",
           "import_run_in_process", "import_runs_recover"]
