"""The tagging commands of ``maedaw``: tag, tags, similar, bench tag|taught|similar, corpus tags.

Kept apart from ``cli.py`` (which registers them through :func:`add_commands`) so that file
stays a list of small commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from rich.table import Table

from maedaw.bridge.cli import _emit_json, progress_bar, stdout
from maedaw.dsp.audio_io import AudioError


def _fail(message: object) -> int:
    sys.stderr.write(f"error: {message}\n")
    return 1


def _embedder(args: argparse.Namespace):
    import torch

    from maedaw.models.embed import load_embedder

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    precision = "float32" if getattr(args, "fp32", False) else "auto"
    return load_embedder(args.model, precision=precision)


def _known_errors() -> tuple[type[Exception], ...]:
    from maedaw.models.checkpoint import CheckpointError
    from maedaw.models.similar import SimilarityError
    from maedaw.models.tagging import TaggingError
    from maedaw.models.tags_user import TagLibraryError

    return (CheckpointError, TaggingError, TagLibraryError, SimilarityError, ValueError)


def cmd_tag(args: argparse.Namespace) -> int:
    from maedaw.models.tagging import no_vocabulary, score_embeddings, vocabularies

    if args.top < 1:
        return _fail(f"--top must be at least 1, got {args.top}")
    try:
        embedder = _embedder(args)
        vocabs = vocabularies(embedder, taught=not args.no_taught)
        if not vocabs:
            raise no_vocabulary(embedder.model_id)
    except _known_errors() as exc:
        return _fail(exc)
    results, errors = [], []
    with progress_bar(not args.json) as progress:
        for i, path in enumerate(args.files):
            progress(i / len(args.files), Path(path).name[:12])
            try:
                emb = embedder.embed_file(
                    path,
                    args.start,
                    args.end,
                    use_cache=not args.no_cache,
                    progress=lambda f, i=i: progress((i + f) / len(args.files), "embedding"),
                )
                results.append(score_embeddings(emb, vocabs, args.top))
            except (AudioError, *_known_errors()) as exc:
                errors.append({"source": str(path), "error": str(exc)})
    if args.json:
        _emit_json({"model_id": embedder.model_id, "results": results, "errors": errors})
    else:
        for result in results:
            tags = ", ".join(f"{t['label']} {t['score']:.2f}" for t in result["tags"])
            stdout.print(f"[bold]{result['source']}[/bold]: {tags}", highlight=False)
            if args.windows and len(result["windows"]) > 1:
                for w in result["windows"]:
                    parts = ", ".join(f"{t['label']} {t['score']:.2f}" for t in w["tags"])
                    stdout.print(f"  {w['start']:8.2f}-{w['end']:8.2f} s  {parts}")
        for error in errors:
            sys.stderr.write(f"error: {error['error']}\n")
    return 1 if errors else 0


def cmd_tags_teach(args: argparse.Namespace) -> int:
    from maedaw.models.tags_user import TagLibrary

    try:
        library = TagLibrary.open()
        embedder = _embedder(args)
        with progress_bar(not args.json) as progress:
            tag = library.teach(
                args.name, args.files, embedder, replace=args.replace, progress=progress
            )
    except (AudioError, *_known_errors()) as exc:
        return _fail(exc)
    summary = {"name": tag.name, "examples": len(tag.examples), "library": str(library.path)}
    if args.json:
        _emit_json(summary)
    else:
        stdout.print(f"taught '{tag.name}' from {len(tag.examples)} example(s) ({library.path})")
    return 0


def cmd_tags_list(args: argparse.Namespace) -> int:
    from maedaw.models.tags_user import TagLibrary

    try:
        library = TagLibrary.open()
    except _known_errors() as exc:
        return _fail(exc)
    tags = library.describe()
    if args.json:
        _emit_json({"library": str(library.path), "tags": tags})
        return 0
    table = Table(title=f"taught tags ({library.path})", title_justify="left")
    for name in ("name", "examples", "taught"):
        table.add_column(name)
    for t in tags:
        table.add_row(t["name"], str(t["examples"]), t["created"])
    stdout.print(table)
    return 0


def cmd_tags_forget(args: argparse.Namespace) -> int:
    from maedaw.models.tags_user import TagLibrary

    try:
        TagLibrary.open().forget(args.name)
    except _known_errors() as exc:
        return _fail(exc)
    if not args.json:
        stdout.print(f"forgot '{args.name}'")
    else:
        _emit_json({"forgotten": args.name})
    return 0


def cmd_tags_train_head(args: argparse.Namespace) -> int:
    from maedaw.models.tagger_train import embed_corpus, train_head

    try:
        embedder = _embedder(args)
        with progress_bar(not args.json) as progress:
            sets = embed_corpus(args.corpus, embedder, progress=progress)
        head = train_head(
            sets, embedder.model_id, args.out.name, args.hidden, args.epochs, args.seed
        )
        head.info["corpus"] = str(args.corpus)
        head.info["precision"] = embedder.precision
        weights, meta = head.save(args.out)
    except (AudioError, *_known_errors()) as exc:
        return _fail(exc)
    held = head.info.get("heldout", {})
    if args.json:
        _emit_json({"weights": str(weights), "json": str(meta), "info": head.info})
    else:
        stdout.print(f"wrote {weights} + {meta.name}")
        if held:
            stdout.print(
                f"held-out top-1 {held['top1']:.3f}, mAP {held['mAP']:.3f}, ECE {held['ece']:.3f}"
            )
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    from maedaw.models.similar import find_similar

    try:
        embedder = _embedder(args)
        with progress_bar(not args.json) as progress:
            result = find_similar(
                args.file, args.folders, embedder, args.top, args.start, args.end, progress
            )
    except (AudioError, *_known_errors()) as exc:
        return _fail(exc)
    if args.json:
        _emit_json(result)
        return 0
    table = Table(
        title=f"like {result['query']} ({result['indexed']} indexed)", title_justify="left"
    )
    table.add_column("similarity", justify="right")
    table.add_column("file", overflow="fold")
    for r in result["results"]:
        table.add_row(f"{r['similarity']:.3f}", r["path"])
    stdout.print(table)
    return 0


def _run_bench(
    args: argparse.Namespace,
    bench: Callable[..., dict],
    show: Callable[[dict], None],
    **options,
) -> int:
    """A taught-tag benchmark on the chosen model with a progress bar; its result as JSON
    (``--json``) or through ``show``. Returns the exit code."""
    try:
        embedder = _embedder(args)
        with progress_bar(not args.json) as progress:
            result = bench(
                embedder=embedder,
                shots=args.shots,
                repeats=args.repeats,
                seed=args.seed,
                progress=progress,
                **options,
            )
    except (AudioError, FileNotFoundError, *_known_errors()) as exc:
        return _fail(exc)
    if args.json:
        _emit_json(result)
    else:
        show(result)
    return 0


def cmd_bench_tag(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.tag import bench_tag

    return _run_bench(args, bench_tag, _show_bench_tag, data=args.data, train=args.train)


def _results_table(title: str, columns: tuple[str, ...], text: tuple[str, ...]) -> Table:
    """A benchmark table: the ``text`` columns left-aligned, the numbers right-aligned."""
    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, justify="left" if name in text else "right")
    return table


def _show_bench_tag(result: dict) -> None:
    table = _results_table(
        f"tagging on {result['data']} ({len(result['classes'])} classes)",
        ("method", "top-1", "mAP", "clips", "fitted on"),
        text=("method", "fitted on"),
    )
    for r in result["rows"]:
        table.add_row(
            r["method"], f"{r['top1']:.3f}", f"{r['mAP']:.3f}", str(r["clips"]), r["fitted_on"]
        )
    stdout.print(table)
    few, speed = result["few_shot"], result["throughput"]
    stdout.print(
        f"{few['shots']}-shot taught tags: {few['accuracy_mean']:.3f} "
        f"± {few['accuracy_std']:.3f} ({few['repeats']} draws)"
    )
    stdout.print(
        f"throughput: {speed['x_real_time']:.0f}x real time "
        f"({speed['audio_seconds']:.0f} s of audio in {speed['wall_seconds']:.1f} s, "
        f"{result['threads']} threads, {result['precision']})"
    )


def cmd_bench_taught(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.tag import bench_taught

    return _run_bench(args, bench_taught, _show_bench_taught, corpus=args.corpus, folds=args.folds)


def _show_bench_taught(result: dict) -> None:
    table = _results_table(
        f"{result['shots']}-shot taught tags on {result['corpus']}/heldout",
        ("taught tags for", "clips", "vector", "vector + hidden"),
        text=("taught tags for",),
    )

    def cells(row: dict) -> list[str]:
        return [
            f"{row[k]['mean']:.3f} ± {row[k]['std']:.3f}" for k in ("vector", "vector + hidden")
        ]

    for row in result["novel_classes"]:
        table.add_row(
            f"classes the head never saw: {', '.join(row['novel'])}", str(row["clips"]), *cells(row)
        )
    mean = result["novel_classes_mean"]
    table.add_row(
        "  mean over folds", "", f"{mean['vector']:.3f}", f"{mean['vector + hidden']:.3f}"
    )
    if result["sources_as_tags"]:
        row = result["sources_as_tags"]
        table.add_row(f"{row['sources']} held-out sources", str(row["clips"]), *cells(row))
    stdout.print(table)

    near = _results_table(
        "of the 10 nearest held-out clips, the share that",
        ("share", "vector", "vector + hidden"),
        text=("share",),
    )
    for row in result["novel_classes"]:
        shares = row["neighbours_same_class"]
        near.add_row(
            f"share the class ({', '.join(row['novel'])}; head never saw it)",
            *(f"{shares[k]:.3f}" for k in ("vector", "vector + hidden")),
        )
    mean = result["novel_classes_neighbours_mean"]
    near.add_row("  mean over folds", f"{mean['vector']:.3f}", f"{mean['vector + hidden']:.3f}")
    if result["sources_as_tags"]:
        for what in ("class", "source"):
            shares = result["sources_as_tags"][f"neighbours_same_{what}"]
            near.add_row(
                f"share the {what} (bundled head)",
                *(f"{shares[k]:.3f}" for k in ("vector", "vector + hidden")),
            )
    stdout.print(near)


def cmd_bench_similar(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.tag import bench_similar

    result = bench_similar(args.size, args.dim, args.queries)
    if args.json:
        _emit_json(result)
        return 0
    stdout.print(
        f"usearch HNSW, {result['size']} x {result['dim']}: build {result['build_seconds']:.1f} s, "
        f"query p50 {result['query_ms_p50']:.3f} ms / p99 {result['query_ms_p99']:.3f} ms "
        f"(exact numpy {result['exact_numpy_ms_p50']:.2f} ms), recall@10 "
        f"{result['recall_at_10']:.3f}, update 1 % {result['update_1pct_seconds']:.2f} s, "
        f"file {result['file_mb']:.0f} MB"
    )
    return 0


def cmd_corpus_tags(args: argparse.Namespace) -> int:
    from maedaw.corpus.tags import TagSettings, build_tag_corpus

    work = args.work or args.out.parent / f"{args.out.name}.work"
    try:
        with progress_bar(not args.json) as progress:
            summary = build_tag_corpus(
                args.out, work, TagSettings(seed=args.seed), progress=progress
            )
    except (FileExistsError, RuntimeError) as exc:
        return _fail(exc)
    if args.json:
        _emit_json(summary)
    else:
        for split, labels in sorted(summary["splits"].items()):
            parts = ", ".join(f"{k} {v['clips']}" for k, v in sorted(labels.items()))
            stdout.print(f"{split:>12}: {parts}")
        stdout.print(f"manifest: {args.out / 'manifest.csv'}")
    return 0


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model name, id or path (default: the bundled one)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--fp32", action="store_true", help="float32 instead of bf16 autocast")
    parser.add_argument("--json", action="store_true")


def _region(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", type=float, help="region start, seconds into the file")
    parser.add_argument("--end", type=float, help="region end, seconds into the file")


def _few_shot_options(parser: argparse.ArgumentParser) -> None:
    """What :func:`_run_bench` reads: the N-shot draws and the model to embed with."""
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    _model_options(parser)


def add_commands(commands, corpus_cmds, bench_suites) -> None:
    """Register tag / tags / similar, ``corpus tags`` and ``bench tag`` / ``bench similar``."""
    tag = commands.add_parser("tag", help="semantic tags for audio files (bundled + taught)")
    tag.add_argument("files", nargs="+", type=Path, metavar="FILE")
    tag.add_argument("--top", type=int, default=5, help="tags per file (default 5)")
    _region(tag)
    tag.add_argument("--windows", action="store_true", help="also print per-window tags")
    tag.add_argument("--no-cache", action="store_true", help="ignore the embedding cache")
    tag.add_argument("--no-taught", action="store_true", help="bundled tags only")
    _model_options(tag)
    tag.set_defaults(run=cmd_tag)

    tags = commands.add_parser("tags", help="tags you teach: teach / list / forget")
    actions = tags.add_subparsers(dest="tags_command", required=True, metavar="ACTION")
    teach = actions.add_parser("teach", help="teach a tag from example files")
    teach.add_argument("name")
    teach.add_argument("files", nargs="+", type=Path, metavar="FILE")
    teach.add_argument("--replace", action="store_true", help="drop the tag's old examples")
    _model_options(teach)
    teach.set_defaults(run=cmd_tags_teach)
    listing = actions.add_parser("list", help="list taught tags")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_tags_list)
    forget = actions.add_parser("forget", help="delete a taught tag")
    forget.add_argument("name")
    forget.add_argument("--json", action="store_true")
    forget.set_defaults(run=cmd_tags_forget)
    head = actions.add_parser("train-head", help="train the session tagger on `corpus tags`")
    head.add_argument("corpus", type=Path, metavar="CORPUS_DIR")
    head.add_argument("--out", type=Path, required=True, help="stem, e.g. DIR/tagger-default")
    head.add_argument("--hidden", type=int, default=256, help="hidden units (0: linear)")
    head.add_argument("--epochs", type=int, default=400)
    head.add_argument("--seed", type=int, default=0)
    _model_options(head)
    head.set_defaults(run=cmd_tags_train_head)

    similar = commands.add_parser("similar", help="files most like FILE in some folders")
    similar.add_argument("file", type=Path, metavar="FILE")
    similar.add_argument("--in", dest="folders", nargs="+", type=Path, required=True, metavar="DIR")
    similar.add_argument("--top", type=int, default=10)
    _region(similar)
    _model_options(similar)
    similar.set_defaults(run=cmd_similar)

    ctags = corpus_cmds.add_parser("tags", help="build the labelled tagging corpus")
    ctags.add_argument("out", type=Path, metavar="OUT_DIR")
    ctags.add_argument("--work", type=Path, help="download/unpack folder (default OUT.work)")
    ctags.add_argument("--seed", type=int, default=4321)
    ctags.add_argument("--json", action="store_true")
    ctags.set_defaults(run=cmd_corpus_tags)

    btag = bench_suites.add_parser("tag", help="tagger vs linear probe vs MFCC, N-shot, speed")
    btag.add_argument("--data", type=Path, required=True, help="sub-folders are classes")
    btag.add_argument("--train", type=Path, help="fit the probe / MFCC baseline here")
    _few_shot_options(btag)
    btag.set_defaults(run=cmd_bench_tag)
    btaught = bench_suites.add_parser(
        "taught", help="taught tags on classes the tagger head never saw, and on sources"
    )
    btaught.add_argument("corpus", type=Path, metavar="CORPUS_DIR", help="from `corpus tags`")
    btaught.add_argument("--folds", type=int, default=3, help="groups of held-back classes")
    _few_shot_options(btaught)
    btaught.set_defaults(run=cmd_bench_taught)
    bsim = bench_suites.add_parser("similar", help="vector index speed and recall")
    bsim.add_argument("--size", type=int, default=100_000)
    bsim.add_argument("--dim", type=int, default=2560, help="2560: the bundled model's index")
    bsim.add_argument("--queries", type=int, default=500)
    bsim.add_argument("--json", action="store_true")
    bsim.set_defaults(run=cmd_bench_similar)
