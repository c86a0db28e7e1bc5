"""``maedaw corpus``: build the training and tagging corpora, pack fbanks, export multichannel."""

from __future__ import annotations

import argparse
from pathlib import Path

from .output import emit_json, progress_bar, stdout


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def cmd_corpus_build(args: argparse.Namespace) -> int:
    work = args.work or args.out.parent / f"{args.out.name}.work"
    if args.preset == "pretrain-v1":
        return _build_pretrain_v1(args, work)
    from maedaw.corpus.broad import BroadSettings, build_broad_corpus

    settings = BroadSettings(seed=args.seed, heldout_fraction=_or(args.heldout, 0.15))
    with progress_bar(not args.json) as progress:
        summary = build_broad_corpus(args.out, work, settings, progress=progress)
    if args.json:
        emit_json(summary)
        return 0
    stdout.print(
        f"{summary['clips']} clips: {summary['real_hours']:.2f} h real, "
        f"{summary['synthetic_hours']:.2f} h synthesised (training only)"
    )
    for kind, sides in summary["splits"].items():
        for side, info in sides.items():
            parts = ", ".join(f"{f} {h:.2f} h" for f, h in info["hours_by_family"].items())
            stdout.print(f"{kind:>8} {side:>8}: {parts}")
    stdout.print(f"held-out packages: {', '.join(summary['heldout_packages'])}")
    stdout.print(f"manifest: {args.out / 'manifest.csv'}")
    return 0


def _build_pretrain_v1(args: argparse.Namespace, work: Path) -> int:
    """The 2-hour corpus the bundled compact-default model was pre-trained on."""
    from maedaw.corpus.pretrain import CorpusSettings, build_corpus

    settings = CorpusSettings(seed=args.seed, heldout_fraction=_or(args.heldout, 0.1))
    with progress_bar(not args.json) as progress:
        summary = build_corpus(args.out, work, settings, progress=progress)
    if args.json:
        emit_json(summary)
    else:
        for split, hours in summary["hours"].items():
            parts = ", ".join(f"{c} {h:.2f} h" for c, h in sorted(hours.items()))
            stdout.print(f"{split:>8}: {parts}")
        stdout.print(f"manifest: {args.out / 'manifest.csv'}")
    return 0


def cmd_corpus_export(args: argparse.Namespace) -> int:
    from maedaw.corpus.broad import export_folders

    counts = export_folders(args.corpus, args.out, args.split, args.side, args.by)
    if args.json:
        emit_json({"out": str(args.out), "clips": counts})
    else:
        parts = ", ".join(f"{k} {n}" for k, n in counts.items()) or "none"
        stdout.print(f"{args.split}-disjoint {args.side} -> {args.out}: {parts}")
    return 0


def cmd_corpus_pack(args: argparse.Namespace) -> int:
    from maedaw.models.frontend import DEFAULT_FRONTEND
    from maedaw.models.train_data import build_cache, save_portable_cache, scan_audio

    paths = scan_audio(args.dirs)
    cache_dir = args.out.parent / f"{args.out.name}.cache"
    cache = build_cache(paths, cache_dir)
    save_portable_cache(cache, args.out)
    payload = {
        "out": str(args.out),
        "files": len(cache.paths),
        "hours": round(cache.hours(DEFAULT_FRONTEND), 4),
        "bytes": args.out.stat().st_size,
    }
    if args.json:
        emit_json(payload)
    else:
        stdout.print(
            f"{payload['files']} files, {payload['hours']} h -> {args.out} "
            f"({payload['bytes'] / 1e6:.1f} MB)"
        )
    return 0


def cmd_corpus_multichannel(args: argparse.Namespace) -> int:
    from maedaw.corpus.pretrain import export_multichannel

    work = args.work or args.corpus.parent / f"{args.corpus.name}.work"
    counts = export_multichannel(args.corpus, work, args.out, args.split)
    if args.json:
        emit_json({"out": str(args.out), "files": counts})
    else:
        parts = ", ".join(f"{c} {n}" for c, n in sorted(counts.items())) or "none"
        stdout.print(f"multichannel files -> {args.out}: {parts}")
    return 0


def cmd_corpus_tags(args: argparse.Namespace) -> int:
    from maedaw.corpus.tags import TagSettings, build_tag_corpus

    work = args.work or args.out.parent / f"{args.out.name}.work"
    with progress_bar(not args.json) as progress:
        summary = build_tag_corpus(args.out, work, TagSettings(seed=args.seed), progress=progress)
    if args.json:
        emit_json(summary)
    else:
        for split, labels in sorted(summary["splits"].items()):
            parts = ", ".join(f"{k} {v['clips']}" for k, v in sorted(labels.items()))
            stdout.print(f"{split:>12}: {parts}")
        stdout.print(f"manifest: {args.out / 'manifest.csv'}")
    return 0


def cmd_corpus_survey(args: argparse.Namespace) -> int:
    from maedaw.core.util import write_json_atomic, write_text_atomic
    from maedaw.corpus.pretrain import fetch_packages
    from maedaw.corpus.survey import survey, survey_markdown
    from maedaw.corpus.vocabulary import PACKAGE_RULES, rules_markdown

    if args.fetch:
        fetch_packages(args.work, sorted(PACKAGE_RULES))
    result = survey(args.work, audit_per_tag=args.audit_per_tag, seed=args.seed)
    if args.markdown:
        text = survey_markdown(result) + "\n## The mapping\n\n" + rules_markdown()
        write_text_atomic(args.markdown, text)
    if args.json:
        emit_json(result)
        return 0
    write_json_atomic(args.work / "survey.json", result, indent=1)
    stdout.print(
        f"{result['total_hours']:.2f} h labelled in {result['labelled_files']} files "
        f"({result['unlabelled_hours']:.2f} h unlabelled)"
    )
    packages = result["splits"]["package_disjoint"]
    for split, hours in packages["hours"].items():  # hours per family, each clip once
        stdout.print(f"{split:>8}: " + ", ".join(f"{f} {h:.2f} h" for f, h in hours.items()))
    stdout.print(f"package-disjoint held-out: {', '.join(packages['heldout_packages'])}")
    stdout.print(f"survey: {args.work / 'survey.json'}", soft_wrap=True)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    corpus = commands.add_parser("corpus", help="training corpus tools")
    actions = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build", help="build the labelled corpus from the Debian allowlist (+ synthesis)"
    )
    build.add_argument("out", type=Path, metavar="OUT_DIR")
    build.add_argument("--work", type=Path, help="download/unpack folder (default OUT.work)")
    build.add_argument("--seed", type=int, default=1234)
    build.add_argument(
        "--preset",
        choices=("broad", "pretrain-v1"),
        default="broad",
        help="broad: every package, 37 tags, package- and source-disjoint held-out (default); "
        "pretrain-v1: the 2-hour corpus compact-default v2 was pre-trained on",
    )
    build.add_argument(
        "--heldout",
        type=float,
        help="held-out share of groups (broad: 0.15) or of sources (pretrain-v1: 0.1)",
    )
    build.add_argument("--json", action="store_true")
    build.set_defaults(run=cmd_corpus_build)

    export = actions.add_parser(
        "export", help="link one side of a split into class folders (for bench repair / tag)"
    )
    export.add_argument("corpus", type=Path, metavar="CORPUS_DIR", help="from `corpus build`")
    export.add_argument("out", type=Path, metavar="OUT_DIR")
    export.add_argument("--split", choices=("package", "source"), default="package")
    export.add_argument("--side", choices=("train", "heldout"), default="heldout")
    export.add_argument("--by", choices=("family", "tag"), default="family")
    export.add_argument("--json", action="store_true")
    export.set_defaults(run=cmd_corpus_export)

    pack = actions.add_parser(
        "pack", help="write audio folders' fbanks as one portable cache (to train elsewhere)"
    )
    pack.add_argument("dirs", nargs="+", metavar="DIR")
    pack.add_argument("--out", type=Path, required=True, help="FILE.fbq")
    pack.add_argument("--json", action="store_true")
    pack.set_defaults(run=cmd_corpus_pack)

    multi = actions.add_parser(
        "multichannel",
        help="a split's packaged sources with different channels, at their own rate (benchmarks)",
    )
    multi.add_argument("corpus", type=Path, metavar="CORPUS_DIR", help="maedaw corpus build's OUT")
    multi.add_argument("--out", type=Path, required=True, metavar="DIR")
    multi.add_argument("--work", type=Path, help="its download/unpack folder (default OUT.work)")
    multi.add_argument("--split", choices=("train", "heldout"), default="heldout")
    multi.add_argument("--json", action="store_true")
    multi.set_defaults(run=cmd_corpus_multichannel)

    tags = actions.add_parser("tags", help="build the labelled tagging corpus")
    tags.add_argument("out", type=Path, metavar="OUT_DIR")
    tags.add_argument("--work", type=Path, help="download/unpack folder (default OUT.work)")
    tags.add_argument("--seed", type=int, default=4321)
    tags.add_argument("--json", action="store_true")
    tags.set_defaults(run=cmd_corpus_tags)

    survey = actions.add_parser(
        "survey", help="hours per editor tag and package, audit, package-disjoint split"
    )
    survey.add_argument("work", type=Path, metavar="WORK_DIR", help="download/unpack folder")
    survey.add_argument(
        "--fetch", action="store_true", help="download and unpack the packages first (apt-get)"
    )
    survey.add_argument("--markdown", type=Path, metavar="FILE", help="also write the tables")
    survey.add_argument("--audit-per-tag", type=int, default=8, help="clips measured per tag")
    survey.add_argument("--seed", type=int, default=1234)
    survey.add_argument("--json", action="store_true")
    survey.set_defaults(run=cmd_corpus_survey)
