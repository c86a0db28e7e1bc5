"""Semantic tags: tag files, teach / list / forget your own tags, train the tagger head, and
find similar files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.table import Table

from maedaw.core.errors import MaedawError

from .options import add_model_options, add_region, load_embedder
from .output import emit_json, fail, progress_bar, stdout


def cmd_tag(args: argparse.Namespace) -> int:
    from maedaw.models.tagging import no_vocabulary, score_embeddings, vocabularies

    if args.top < 1:
        return fail(f"--top must be at least 1, got {args.top}")
    embedder = load_embedder(args)
    vocabs = vocabularies(embedder, taught=not args.no_taught)
    if not vocabs:
        raise no_vocabulary(embedder.model_id)
    results, errors = [], []
    with progress_bar(not args.json) as progress:
        for i, path in enumerate(args.files):
            progress(i / len(args.files), Path(path).name[:12])
            try:  # one bad file is reported, the others still tagged
                emb = embedder.embed_file(
                    path,
                    args.start,
                    args.end,
                    use_cache=not args.no_cache,
                    progress=lambda f, i=i: progress((i + f) / len(args.files), "embedding"),
                )
                results.append(score_embeddings(emb, vocabs, args.top))
            except MaedawError as exc:
                errors.append({"source": str(path), "error": str(exc)})
    if args.json:
        emit_json({"model_id": embedder.model_id, "results": results, "errors": errors})
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

    library = TagLibrary.open()
    embedder = load_embedder(args)
    with progress_bar(not args.json) as progress:
        tag = library.teach(
            args.name, args.files, embedder, replace=args.replace, progress=progress
        )
    summary = {"name": tag.name, "examples": len(tag.examples), "library": str(library.path)}
    if args.json:
        emit_json(summary)
    else:
        stdout.print(f"taught '{tag.name}' from {len(tag.examples)} example(s) ({library.path})")
    return 0


def cmd_tags_list(args: argparse.Namespace) -> int:
    from maedaw.models.tags_user import TagLibrary

    library = TagLibrary.open()
    tags = library.describe()
    if args.json:
        emit_json({"library": str(library.path), "tags": tags})
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

    TagLibrary.open().forget(args.name)
    if not args.json:
        stdout.print(f"forgot '{args.name}'")
    else:
        emit_json({"forgotten": args.name})
    return 0


def cmd_tags_train_head(args: argparse.Namespace) -> int:
    from maedaw.models.tagger_train import embed_corpus, train_head

    embedder = load_embedder(args)
    with progress_bar(not args.json) as progress:
        sets = embed_corpus(args.corpus, embedder, progress=progress)
    head = train_head(sets, embedder.model_id, args.out.name, args.hidden, args.epochs, args.seed)
    head.info["corpus"] = str(args.corpus)
    head.info["precision"] = embedder.precision
    weights, meta = head.save(args.out)
    held = head.info.get("heldout", {})
    if args.json:
        emit_json({"weights": str(weights), "json": str(meta), "info": head.info})
    else:
        stdout.print(f"wrote {weights} + {meta.name}")
        if held:
            stdout.print(
                f"held-out top-1 {held['top1']:.3f}, mAP {held['mAP']:.3f}, ECE {held['ece']:.3f}"
            )
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    from maedaw.models.similar import find_similar

    embedder = load_embedder(args)
    with progress_bar(not args.json) as progress:
        result = find_similar(
            args.file, args.folders, embedder, args.top, args.start, args.end, progress
        )
    if args.json:
        emit_json(result)
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


def register(commands: argparse._SubParsersAction) -> None:
    tag = commands.add_parser("tag", help="semantic tags for audio files (bundled + taught)")
    tag.add_argument("files", nargs="+", type=Path, metavar="FILE")
    tag.add_argument("--top", type=int, default=5, help="tags per file (default 5)")
    add_region(tag)
    tag.add_argument("--windows", action="store_true", help="also print per-window tags")
    tag.add_argument("--no-cache", action="store_true", help="ignore the embedding cache")
    tag.add_argument("--no-taught", action="store_true", help="bundled tags only")
    add_model_options(tag)
    tag.set_defaults(run=cmd_tag)

    tags = commands.add_parser("tags", help="tags you teach: teach / list / forget")
    actions = tags.add_subparsers(dest="tags_command", required=True, metavar="ACTION")
    teach = actions.add_parser("teach", help="teach a tag from example files")
    teach.add_argument("name")
    teach.add_argument("files", nargs="+", type=Path, metavar="FILE")
    teach.add_argument("--replace", action="store_true", help="drop the tag's old examples")
    add_model_options(teach)
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
    add_model_options(head)
    head.set_defaults(run=cmd_tags_train_head)

    similar = commands.add_parser("similar", help="files most like FILE in some folders")
    similar.add_argument("file", type=Path, metavar="FILE")
    similar.add_argument("--in", dest="folders", nargs="+", type=Path, required=True, metavar="DIR")
    similar.add_argument("--top", type=int, default=10)
    add_region(similar)
    add_model_options(similar)
    similar.set_defaults(run=cmd_similar)
