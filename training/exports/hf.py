"""`hf`: a Hugging Face `datasets` dataset, as a tar stream:

    rlhf-studio-<hash12>-<rows>/README.md          the dataset card (counts, filters, hash, licences)
    rlhf-studio-<hash12>-<rows>/data/train.parquet
    rlhf-studio-<hash12>-<rows>/data/validation.parquet
    rlhf-studio-<hash12>-<rows>/dataset/           DatasetDict.save_to_disk (load_from_disk reads it)

`rows` picks what the dataset holds: `preference` (default; the standard pairs),
`preference-conversational`, `sft` or `prompts`, with the same columns as those JSONL exports
and explicit features, so every row has the same schema. The card's YAML front matter names
the Parquet files per split, so `load_dataset("<dir>")` works as well.

Built in a temporary directory under DATA_DIR in one pass over the snapshot (rows go to a
Parquet writer per split in batches of 1,000, so memory stays flat), then streamed as a tar
archive file by file and deleted. The build starts when the first byte is asked for, so an
export nobody reads costs nothing.

Building can take long, so the API and the pages do not stream it: an export job
(training.export_jobs, on the `default` queue) writes the tar to DATA_DIR/exports/ with
`tar_chunks`, and the finished file is served. `manage.py dataset_export --format hf` still
streams it in its own process.
"""
from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from django.conf import settings

from studio.errors import ValidationFailed
from training.exports import preference, prompts, sft
from training.exports.common import ExportContext, ExportFormat, ExportOptions

ROWS = ("preference", "preference-conversational", "sft", "prompts")
BATCH = 1000
# Licences of the import formats' public sources; rows written in the Studio are the project's.
SOURCE_LICENCES = {
    "self-instruct": ("Apache-2.0", "Self-Instruct seed tasks (Wang et al. 2022), github.com/yizhongw/self-instruct"),
    "fgrlhf": ("Apache-2.0", "Fine-Grained RLHF QA-Feedback (Wu et al. 2023), github.com/allenai/FineGrainedRLHF"),
    "jsonl": ("unknown", "generic JSONL import: the licence of the file's own source applies"),
}


def _features(kind: str):
    from datasets import Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    pair_meta = {"prompt_id": Value("int64"), "chosen_id": Value("int64"), "rejected_id": Value("int64"),
                 "tie": Value("bool"), "margin": Value("float64"), "label_source": Value("string"),
                 "label_id": Value("int64"), "annotator": Value("string"), "split": Value("string")}
    if kind == "preference":
        return Features({"prompt": Value("string"), "chosen": Value("string"), "rejected": Value("string"),
                         **pair_meta})
    if kind == "preference-conversational":
        return Features({"prompt": List(message), "chosen": List(message), "rejected": List(message), **pair_meta})
    if kind == "sft":
        return Features({"messages": List(message), "prompt_id": Value("int64"),
                         "demonstration_id": Value("int64"), "author": Value("string"),
                         "source": Value("string"), "split": Value("string")})
    return Features({"prompt": List(message), "prompt_text": Value("string"),
                     "documents": List({"title": Value("string"), "text": Value("string")}),
                     "prompt_id": Value("int64"), "kind": Value("string"), "content_hash": Value("string"),
                     "split": Value("string")})


def _rows_of(kind: str, rows, options: ExportOptions):
    if kind == "preference":
        return preference.preference_rows(rows, options=options, conversational=False)
    if kind == "preference-conversational":
        return preference.preference_rows(rows, options=options, conversational=True)
    if kind == "sft":
        return sft.sft_rows(rows)
    return ({**r, "documents": [{"title": d.get("title", ""), "text": d.get("text", "")} for d in r["documents"]]}
            for r in prompts.prompt_rows(rows))


def check_options(options: ExportOptions) -> str:
    kind = options.rows or "preference"
    if kind not in ROWS:
        raise ValidationFailed(f"rows must be one of {', '.join(ROWS)} for hf.", {"rows": ["Unknown value."]})
    return kind


def _write_parquet(kind: str, rows, options: ExportOptions, data_dir: Path) -> dict[str, int]:
    """One pass: each row to its split's Parquet file, in batches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _features(kind).arrow_schema
    writers = {split: pq.ParquetWriter(data_dir / f"{split}.parquet", schema) for split in ("train", "validation")}
    batches: dict[str, list] = {"train": [], "validation": []}
    counts = {"train": 0, "validation": 0}

    def flush(split: str) -> None:
        if batches[split]:
            writers[split].write_table(pa.Table.from_pylist(batches[split], schema=schema))
            counts[split] += len(batches[split])
            batches[split] = []

    try:
        for item in _rows_of(kind, rows, options):
            batches[item["split"]].append(item)
            if len(batches[item["split"]]) >= BATCH:
                flush(item["split"])
        for split in batches:
            flush(split)
    finally:
        for writer in writers.values():
            writer.close()
    return counts


def dataset_card(*, context: ExportContext, kind: str, counts: dict[str, int], options: ExportOptions) -> str:
    sources = context.sources or {}
    licences = [f"- `{fmt}` ({n} prompts): {SOURCE_LICENCES.get(fmt, ('unknown', 'unknown source'))[0]} — "
                f"{SOURCE_LICENCES.get(fmt, ('unknown', 'unknown source'))[1]}" for fmt, n in sorted(sources.items())]
    filters = context.header.get("filters", {})
    split = context.header.get("split", {})
    title = f"RLHF Studio snapshot {context.sha256[:12]} ({kind})"
    card_counts = "\n".join(f"| {k} | {v} |" for k, v in context.counts.items())
    present = [split for split in ("train", "validation") if counts.get(split)]
    configs = ("configs:\n- config_name: default\n  data_files:\n" + "".join(
        f"  - split: {split}\n    path: data/{split}.parquet\n" for split in present)) if present else ""
    return f"""---
license: other
license_name: rlhf-studio-project-data
pretty_name: "{title}"
tags:
- rlhf
- rlhf-studio
- {kind}
{configs}---

# {title}

Exported by RLHF Studio from the dataset snapshot
`{context.sha256}` of project “{context.project}” (snapshot made {context.created_at}).
The snapshot is immutable: a model trained on this data names this hash in its lineage.

## Rows

`{kind}` rows: {counts['train']} train, {counts['validation']} validation (a split without rows has no
file).
Labels: {options.labels}{', tied pairs included' if options.ties else ''}{
', PII redacted (emails, phone and card numbers replaced by placeholders)' if options.redact else ''}.

## Snapshot counts

| what | count |
| --- | --- |
{card_counts}

## Filters

```json
{json.dumps(filters, indent=2, sort_keys=True)}
```

## Split

Deterministic by prompt: {split.get('method', '')}, validation fraction
{split.get('validation_fraction')}, seed {split.get('seed')}. A prompt (and any duplicate of its
content) is never in both splits.

## Licences

Labels written in RLHF Studio belong to the project's owner (`license: other`).
Imported sources:
{chr(10).join(licences) if licences else '- none (every prompt was written in RLHF Studio)'}

## Annotators

Annotators appear as stable pseudonyms (`annotator-` + a hash prefix), never by username.
"""


def tar_stream(root: Path, *, arc_root: str) -> Iterator[bytes]:
    """A ustar/pax archive of every file under `root`, written file by file in 64 KiB chunks
    (tarfile's own writer would copy whole files into our buffer)."""
    mtime = int(time.time())
    written = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        info = tarfile.TarInfo(name=f"{arc_root}/{path.relative_to(root).as_posix()}")
        info.size = path.stat().st_size
        info.mtime = mtime
        info.mode = 0o644
        header = info.tobuf(format=tarfile.PAX_FORMAT)
        yield header
        written += len(header)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 16):
                yield chunk
        padding = (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE) % tarfile.BLOCKSIZE
        yield b"\0" * padding
        written += info.size + padding
    end = b"\0" * (2 * tarfile.BLOCKSIZE)
    written += len(end)
    yield end + b"\0" * ((tarfile.RECORDSIZE - written % tarfile.RECORDSIZE) % tarfile.RECORDSIZE)


def build_dataset(rows, *, context: ExportContext, options: ExportOptions, kind: str, out: Path,
                  on_phase: Callable[[str], None] | None = None) -> Path:
    """Write the dataset directory (card, Parquet, save_to_disk) under `out`; returns it.
    `on_phase("dataset")` is called once the rows are read, before `datasets` saves them."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    (out / "data").mkdir(parents=True)
    counts = _write_parquet(kind, rows, options, out / "data")
    if on_phase is not None:
        on_phase("dataset")
    features = _features(kind)
    # An empty split is left out: `datasets` can neither save nor load a split without rows.
    for split, n in counts.items():
        if not n:
            (out / "data" / f"{split}.parquet").unlink()
    splits = datasets.DatasetDict({
        split: datasets.Dataset.from_parquet(str(out / "data" / f"{split}.parquet"), features=features,
                                             cache_dir=str(out.parent / "cache"))
        for split, n in counts.items() if n
    })
    splits.save_to_disk(str(out / "dataset"))
    (out / "README.md").write_text(dataset_card(context=context, kind=kind, counts=counts, options=options))
    return out


def stream(rows, *, context: ExportContext, options: ExportOptions):
    kind = check_options(options)  # refuse a bad option before any byte is sent
    return _stream(rows, context=context, options=options, kind=kind)


def _stream(rows, *, context, options, kind) -> Iterator[bytes]:
    return tar_chunks(rows, context=context, options=options, kind=kind)


def tar_chunks(rows, *, context: ExportContext, options: ExportOptions, kind: str,
               on_phase: Callable[[str], None] | None = None) -> Iterator[bytes]:
    """The export's tar archive as chunks: built in a temporary directory (removed however the
    generator ends), then archived file by file. `on_phase` is told "dataset" when the rows are
    read and "archive" when the archive starts."""
    base = Path(settings.DATA_DIR) / "exports-tmp"
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="hf-", dir=base))
    try:
        name = f"rlhf-studio-{context.sha256[:12]}-{kind}"
        root = build_dataset(rows, context=context, options=options, kind=kind, out=tmp / name, on_phase=on_phase)
        if on_phase is not None:
            on_phase("archive")
        yield from tar_stream(root, arc_root=name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


FORMAT = ExportFormat(name="hf", description="A Hugging Face datasets dataset (save_to_disk + Parquet + dataset card) "
                                            "as a tar archive; rows=preference|preference-conversational|sft|prompts.",
                      media_type="application/x-tar", extension="tar", stream=stream, unit="bytes")
