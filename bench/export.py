"""Benchmark: dataset snapshot + `preference` export against the naive way, in the same run.

    .venv/bin/python bench/export.py [--sizes 10000,100000] [--overlap 3] [--keep]

Builds its own PostgreSQL database (BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/studio_bench; created here and dropped at the end), with one
project per size holding that many rankings of K=4 candidates (`overlap` rankings per prompt,
by 10 annotators, every candidate rated), written with bulk_create.

Each variant runs in its own Python process so that its peak RSS is its own:
- naive: load every prompt with its candidates and counting rankings as ORM objects, compute
  the same consensus with the same functions, build the list of pair dicts, `json.dumps` it
  and write it.
- snapshot + export: `snapshot_create` (on PostgreSQL one streamed query, a row per prompt;
  canonical JSONL written and hashed) then the `preference` export read back from the file line
  by line and written to a file.
- export: the `preference` export alone, from the snapshot the previous variant made (the usual
  case: a snapshot is made once and exported in several formats, again and again).
All three write the same pairs (checked: an order-independent digest of their (prompt, chosen,
rejected) keys must match). Prints rows/s (pairs written per second), wall and CPU time and
peak RSS of each, the ratios to naive, and how peak RSS grows from the smallest size to the
largest; peak RSS is also shown above the process's baseline after Django setup.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/studio_bench"
K = 4
ANNOTATORS = 10
WORDS = ("the model answer explains clearly why each step follows from the previous one and cites the "
         "reference document where it helps the reader check a fact quickly before moving on").split()


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Peak resident set size of this process so far. VmHWM, not getrusage's ru_maxrss: Linux
    carries ru_maxrss over a fork and exec, so a worker started by the process that has just
    built the database (~120 MiB) reported that as its own peak."""
    peak = _proc_status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    current = _proc_status_mb("VmRSS")
    return current if current is not None else rss_mb()


def setup_django(db_url: str, data_dir: str) -> None:
    os.environ["DATABASE_URL"] = db_url
    os.environ["STUDIO_DATA_DIR"] = data_dir
    os.environ.setdefault("STUDIO_SECRET_KEY", "bench-export")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    import django

    django.setup()


# --- Database and data ------------------------------------------------------------------------

def _admin_connection(db_url: str):
    import psycopg

    base, _, name = db_url.rpartition("/")
    return psycopg.connect(f"{base}/postgres", autocommit=True), name


def create_database(db_url: str) -> None:
    conn, name = _admin_connection(db_url)
    with conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(db_url: str) -> None:
    from django.db import connections

    connections.close_all()
    conn, name = _admin_connection(db_url)
    with conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def build_project(slug: str, rankings: int, overlap: int, annotators, seed: int) -> None:
    """`rankings` rankings of K candidates, `overlap` per prompt, in batches of bulk_create."""
    from labeling.models import Candidate, Project, Prompt, Ranking, Source
    from labeling.services import prompt_content_hash

    rng = random.Random(seed)
    project = Project.objects.create(name=slug, slug=slug, k_candidates=K, overlap=overlap)
    prompts_total = -(-rankings // overlap)
    made = 0
    batch = 2000  # prompts per round
    for start in range(0, prompts_total, batch):
        n = min(batch, prompts_total - start)
        prompts = []
        for i in range(start, start + n):
            messages = [{"role": "user", "content": f"Question {i}: {text(rng, 18)}"}]
            prompts.append(Prompt(project=project, messages=messages, documents=[],
                                  content_hash=prompt_content_hash(messages=messages, documents=[])))
        prompts = Prompt.objects.bulk_create(prompts)
        candidates = Candidate.objects.bulk_create([
            Candidate(prompt=p, text=text(rng, 60), source=Source.GENERATED,
                      generation={"model": "bench", "temperature": 0.7 + 0.3 * (k % 2), "seed": k, "top_p": 0.95,
                                  "strategy": "plain"})
            for p in prompts for k in range(K)])
        labels = []
        for index, p in enumerate(prompts):
            ids = [c.pk for c in candidates[index * K:(index + 1) * K]]
            for who in rng.sample(annotators, overlap):
                if made >= rankings:
                    break
                order = ids[:]
                rng.shuffle(order)
                groups = [[order[0]], [order[1], order[2]], [order[3]]] if rng.random() < 0.2 else [[c] for c in order]
                shown = ids[:]
                rng.shuffle(shown)
                labels.append(Ranking(
                    prompt=p, annotator=who, ranking=groups, shown_order=shown,
                    ratings={str(c): 7 - 2 * g for g, group in enumerate(groups) for c in group},
                    flags={str(order[3]): ["hallucination"]} if rng.random() < 0.1 else {}))
                made += 1
        Ranking.objects.bulk_create(labels, batch_size=5000)


# --- The two variants (each in its own process) ------------------------------------------------

def pair_digest(keys) -> str:
    """An order-independent digest of (prompt, chosen, rejected) keys: the sum of their hashes."""
    total = 0
    for key in keys:
        total = (total + int.from_bytes(hashlib.sha256(repr(tuple(key)).encode()).digest()[:16], "big")) % 2**128
    return f"{total:032x}"[:16]


def export_to_file(snapshot, out_path: str) -> None:
    from training.exports import export_stream

    export = export_stream(snapshot=snapshot, format_name="preference")
    with open(out_path, "wb") as out:
        for chunk in export.chunks:
            out.write(chunk)


def written_pairs(out_path: str) -> dict:
    """After timing: how many pairs the file holds and their digest (the check that every
    variant wrote the same pairs)."""
    rows = 0

    def keys():
        nonlocal rows
        with open(out_path, "rb") as f:
            for line in f:
                r = json.loads(line)
                rows += 1
                yield r["prompt_id"], r["chosen_id"], r["rejected_id"]

    digest = pair_digest(keys())
    return {"rows": rows, "digest": digest}


def run_streamed(slug: str, out_path: str, sha256: str | None) -> dict:
    from labeling.models import Project
    from training.snapshots import snapshot_create

    project = Project.objects.get(slug=slug)
    start, cpu = time.perf_counter(), time.process_time()
    snapshot, _ = snapshot_create(user=None, project=project)
    snapshot_seconds = time.perf_counter() - start
    export_to_file(snapshot, out_path)
    seconds, cpu, peak = time.perf_counter() - start, time.process_time() - cpu, rss_mb()
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, "snapshot_seconds": snapshot_seconds,
            "sha256": snapshot.sha256, "snapshot_mb": snapshot.size_bytes / 2**20, **written_pairs(out_path)}


def run_export(slug: str, out_path: str, sha256: str | None) -> dict:
    from training.models import DatasetSnapshot

    snapshot = DatasetSnapshot.objects.select_related("project").get(sha256=sha256, project__slug=slug)
    start, cpu = time.perf_counter(), time.process_time()
    export_to_file(snapshot, out_path)
    seconds, cpu, peak = time.perf_counter() - start, time.process_time() - cpu, rss_mb()
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, **written_pairs(out_path)}


def run_naive(slug: str, out_path: str, sha256: str | None) -> dict:
    from django.db.models import Prefetch

    from labeling.agreement import consensus_ranked_pairs, trust_score
    from labeling.gold import trust_weights
    from labeling.models import Project, Prompt
    from labeling.review import ranking_counting_list
    from training.exports.common import prompt_text, ranking_pairs, rating_margin

    start, cpu = time.perf_counter(), time.process_time()
    project = Project.objects.get(slug=slug)
    prompts = list(Prompt.objects.filter(project=project).order_by("id").prefetch_related(
        "candidates", Prefetch("rankings", queryset=ranking_counting_list().order_by("id"))))
    trust, prior = trust_weights(project=project), trust_score([])
    rows = []
    for prompt in prompts:
        texts = {c.id: c.text for c in prompt.candidates.all()}
        latest = {}
        for ranking in prompt.rankings.all():
            latest[ranking.annotator_id] = ranking
        if not latest:
            continue
        annotators = sorted(latest)
        consensus = consensus_ranked_pairs([latest[a].ranking for a in annotators],
                                           [trust.get(a, prior) for a in annotators])
        text_prompt = prompt_text({"messages": prompt.messages, "documents": prompt.documents})
        ratings = [latest[a].ratings for a in annotators]
        for chosen, rejected, tie in ranking_pairs(consensus):
            rows.append({"prompt": text_prompt, "chosen": texts[chosen], "rejected": texts[rejected],
                         "prompt_id": prompt.id, "chosen_id": chosen, "rejected_id": rejected, "tie": tie,
                         "margin": rating_margin(ratings, chosen, rejected)})
    data = json.dumps(rows)
    with open(out_path, "w") as out:
        out.write(data)
    seconds, cpu, peak = time.perf_counter() - start, time.process_time() - cpu, rss_mb()
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, "rows": len(rows),
            "digest": pair_digest((r["prompt_id"], r["chosen_id"], r["rejected_id"]) for r in rows)}


VARIANTS = {  # name: (what the table calls it, the function its worker process runs)
    "naive": ("naive (ORM, list, json.dumps)", run_naive),
    "streamed": ("snapshot + export", run_streamed),
    "export": ("export of the existing snapshot", run_export),
}


def worker(args) -> None:
    """One timed run in this process. Snapshots go to the run's shared data directory (the
    export variant reads the one the streamed variant made); the output to a private one."""
    setup_django(args.db_url, args.data_dir)
    from django.db import connection

    connection.ensure_connection()
    # Everything any variant imports is imported before the baseline is taken.
    import labeling.stats  # noqa: F401
    import training.exports  # noqa: F401
    import training.snapshots  # noqa: F401

    baseline = current_rss_mb()
    with tempfile.TemporaryDirectory(prefix="bench-export-out-") as out_dir:
        result = VARIANTS[args.worker][1](args.project, str(Path(out_dir) / "out"), args.snapshot)
    result["baseline_rss_mb"] = baseline  # peak_rss_mb is taken when the timed work ends
    print("RESULT " + json.dumps(result))


def run_variant(variant: str, slug: str, db_url: str, data_dir: str, sha256: str | None = None) -> dict:
    command = [sys.executable, __file__, "--worker", variant, "--project", slug, "--db-url", db_url,
               "--data-dir", data_dir]
    proc = subprocess.run(command + (["--snapshot", sha256] if sha256 else []), capture_output=True, text=True,
                          cwd=ROOT)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"{variant} on {slug} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(line[len("RESULT "):])


def print_report(sizes: list[int], results: dict) -> None:
    print()
    print("| rankings | variant | pairs | wall s | CPU s | pairs/s | vs naive | peak RSS MiB | above baseline MiB |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in sizes:
        naive = results[(size, "naive")]
        for variant, (label, _) in VARIANTS.items():
            r = results[(size, variant)]
            print(f"| {size:,} | {label} | {r['rows']:,} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | "
                  f"{r['rows'] / r['seconds']:,.0f} | {naive['seconds'] / r['seconds']:.1f}x | "
                  f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['baseline_rss_mb']:.0f} |")
    print()
    for size in sizes:
        n, s, e = (results[(size, v)] for v in VARIANTS)
        if not (n["digest"] == s["digest"] == e["digest"]) or not (n["rows"] == s["rows"] == e["rows"]):
            sys.exit(f"MISMATCH at {size}: the variants wrote different pairs")
        print(f"{size:,} rankings: snapshot + export {n['seconds'] / s['seconds']:.1f}x faster than naive "
              f"(CPU {n['cpu_seconds'] / s['cpu_seconds']:.1f}x), export of the existing snapshot "
              f"{n['seconds'] / e['seconds']:.1f}x. Snapshot alone {s['snapshot_seconds']:.2f} s "
              f"({size / s['snapshot_seconds']:,.0f} rankings/s), file {s['snapshot_mb']:.1f} MiB. "
              f"Same pairs ({s['digest']}).")
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        growth = ", ".join(f"{label} {round(results[(hi, v)]['peak_rss_mb'] - results[(lo, v)]['peak_rss_mb']):+d} MiB"
                           for v, (label, _) in VARIANTS.items())
        print(f"Peak RSS growth from {lo:,} to {hi:,} rankings: {growth}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="rankings per project, comma-separated")
    parser.add_argument("--overlap", type=int, default=3, help="rankings per prompt")
    parser.add_argument("--db-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="use the database a --keep run left (no build)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant (the fastest is reported)")
    parser.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"Building {args.db_url.rpartition('/')[2]} (PostgreSQL): projects of {', '.join(map(str, sizes))} "
          f"rankings, K={K}, overlap {args.overlap}, {ANNOTATORS} annotators")
    if not args.reuse:
        try:
            create_database(args.db_url)
        except Exception as exc:  # psycopg.OperationalError: no server, no rights
            sys.exit(f"Cannot create the benchmark database at {args.db_url} ({exc}). This benchmark needs "
                     f"PostgreSQL: start it or point BENCH_DATABASE_URL at one.")
    scratch = tempfile.mkdtemp(prefix="bench-export-main-")
    try:
        setup_django(args.db_url, scratch)
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.db import connection, connections

        if not args.reuse:
            call_command("migrate", verbosity=0)
            users = get_user_model().objects.bulk_create(
                [get_user_model()(username=f"annotator{i}") for i in range(ANNOTATORS)])
            for size in sizes:
                t0 = time.perf_counter()
                build_project(f"bench-{size}", size, args.overlap, users, seed=size)
                print(f"  built bench-{size} in {time.perf_counter() - t0:.1f} s")
            with connection.cursor() as cursor:
                # Planner statistics and the visibility map, as autovacuum keeps them in production
                # (without it the first reads of the new rows also write their hint bits).
                cursor.execute("VACUUM (ANALYZE)")
        connections.close_all()

        results = {}
        for size in sizes:
            for variant in VARIANTS:
                # Best of `repeat` runs (each a fresh process): other work on the machine only
                # ever adds time, so the minimum is the fairest estimate of each side. The
                # export variant reads the snapshot the streamed runs made (its sha256).
                sha256 = results[(size, "streamed")]["sha256"] if variant == "export" else None
                runs = [run_variant(variant, f"bench-{size}", args.db_url, scratch, sha256)
                        for _ in range(args.repeat)]
                results[(size, variant)] = r = dict(min(runs, key=lambda x: x["seconds"]))
                r["peak_rss_mb"] = max(x["peak_rss_mb"] for x in runs)
                times = ", ".join(f"{x['seconds']:.2f}" for x in runs)
                print(f"  {variant:8} {size:>7} rankings: {r['rows']} pairs in {times} s, "
                      f"peak RSS {r['peak_rss_mb']:.0f} MiB", flush=True)
        print_report(sizes, results)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if args.keep:
            print(f"Kept {args.db_url}")
        else:
            drop_database(args.db_url)


if __name__ == "__main__":
    main()
