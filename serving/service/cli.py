"""Operator CLI for published versions and the retrieval service.

    python -m serving.service.cli [--vocabulary FILE] serve --surface homefeed [--surface search] [--port 8000]
    python -m serving.service.cli versions SURFACE
    python -m serving.service.cli show SURFACE VERSION
    python -m serving.service.cli promote SURFACE VERSION
    python -m serving.service.cli rollback SURFACE [--to VERSION]
    python -m serving.service.cli canary SURFACE VERSION --traffic 0.05 | canary SURFACE --clear
    python -m serving.service.cli retain SURFACE --keep 10 [--dry-run]

S3 comes from the environment (``PINREC_S3_ENDPOINT_URL``, ``PINREC_S3_BUCKET``,
``PINREC_S3_PREFIX``, ``AWS_*``; see ``storage/s3.py``; with the embedded default,
``source var/s3.env`` while ``pinrec-ops ui`` runs); without it every command stops with a
one-line hint. ``serve`` binds 127.0.0.1 unless told otherwise and reads user sequences from the
Feast online store under ``--feast-data-dir`` (default: the main command's, ``var/<source>/feast``
or ``$PINREC_DATA_DIR/feast``; ``--features none``: requests carry ``recent_events`` only).
Surfaces and outcomes are the deployment's vocabulary: ``--vocabulary FILE``, else
``$PINREC_VOCABULARY``, else the shipped file of ``$PINREC_SOURCE`` (default simulated); ``serve``
refuses a version whose outcome or surface codes disagree with those of the features it reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from events.vocabulary import (
    Vocabulary,
    VocabularyError,
    default_vocabulary_file,
    load_vocabulary,
)
from serving.registry.manifest import RegistryError
from serving.registry.store import Registry
from storage.paths import data_dir
from storage.s3 import S3Settings, S3Unavailable, check_reachable


def _registry() -> Registry:
    check_reachable(S3Settings.from_env())
    return Registry.from_env()


# argparse types: a bad value is a usage error (exit 2) that names it (also used by `pinrec-ops`).


def fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a fraction in [0, 1]")
    return number


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return number


def iso_date(value: str):
    """YYYY-MM-DD as a datetime.date."""
    from datetime import date

    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def cmd_versions(args: argparse.Namespace) -> int:
    reg = _registry()
    champion = reg.champion(args.surface)
    canary = reg.canary(args.surface)
    rows = []
    for version in reg.list_versions(args.surface):
        role = []
        if version == champion:
            role.append("champion")
        if canary and version == canary[0]:
            role.append(f"canary {canary[1]:g}")
        manifest = reg.manifest(args.surface, version)
        idx = manifest.get("index", {})
        rows.append(
            f"{version}  {idx.get('kind', '?'):8s} {json.dumps(idx.get('params', {})):18s} "
            f"recall@100={idx.get('recall_at_100', float('nan')):.4f}  "
            f"items={idx.get('ntotal', '?')}  {', '.join(role)}"
        )
    print("\n".join(rows) if rows else f"no versions of {args.surface}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    print(json.dumps(_registry().manifest(args.surface, args.version), indent=2, sort_keys=True))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    print(json.dumps(_registry().promote(args.surface, args.version, allow_older=args.allow_older)))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    print(json.dumps(_registry().rollback(args.surface, args.to)))
    return 0


def cmd_canary(args: argparse.Namespace) -> int:
    reg = _registry()
    if args.clear:
        reg.clear_canary(args.surface)
        print(json.dumps({"canary": None}))
        return 0
    if not args.version or args.traffic is None:
        raise SystemExit("canary needs VERSION and --traffic (or --clear)")
    print(json.dumps(reg.set_canary(args.surface, args.version, args.traffic)))
    return 0


def cmd_retain(args: argparse.Namespace) -> int:
    deleted = _registry().retain(args.surface, args.keep, dry_run=args.dry_run)
    print(json.dumps({"deleted" if not args.dry_run else "would_delete": deleted}))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from serving.service.app import create_app
    from serving.service.features import FeastFeatures
    from serving.service.retriever import set_threads
    from serving.service.service import ServingConfig
    from serving.service.versions import VersionManager

    set_threads(args.faiss_threads, args.torch_threads)
    features, feature_mapping, where = None, None, ""
    if args.features == "feast":
        from feature_pipeline.store import FeastSettings, open_store

        feast_dir = Path(args.feast_data_dir) if args.feast_data_dir else data_dir() / "feast"
        if not (feast_dir / "registry.db").exists():
            raise ValueError(
                f"no Feast registry under {feast_dir}: run the main command first "
                "(./scripts/main.sh), pass --feast-data-dir, or serve with --features none"
            )
        settings = FeastSettings(feast_dir)
        if args.feast_config:
            settings = FeastSettings(feast_dir, Path(args.feast_config))
        from events.vocabulary import read_ledger
        from feature_pipeline.store import codes_path, feature_codes

        store = open_store(settings)
        features = FeastFeatures(store)
        # the codes the features were written with: a version with other codes is refused at load
        ledger = codes_path(feast_dir)
        feature_mapping = feature_codes(store) or (dict(read_ledger(ledger)) if ledger.exists() else None)
        where = f"the features under {feast_dir}"
    manager = VersionManager(
        _registry(),
        args.surface,
        args.cache_dir,
        poll_interval_s=args.poll_interval,
        retry_after_s=args.retry_after,
        feature_codes=feature_mapping,
        features_where=where,
    )
    serving = ServingConfig(
        max_wait_ms=args.max_wait_ms,
        max_batch=args.max_batch,
        encoder_cache_mb=args.encoder_cache_mb,
        recommend_candidates=args.recommend_candidates,
    )
    app = create_app(
        manager,
        features,
        max_body_bytes=args.max_body_bytes,
        inline=args.inline,
        serving=serving,
        vocabulary=args.vocabulary_loaded,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)
    return 0


def _vocabulary_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--vocabulary",
        help="the deployment's vocabulary (YAML; default $PINREC_VOCABULARY, else the shipped file of $PINREC_SOURCE)",
    )


def load_cli_vocabulary(argv: list[str] | None) -> Vocabulary:
    """The vocabulary named by --vocabulary in `argv`, else $PINREC_VOCABULARY, else the shipped
    file of $PINREC_SOURCE (its surfaces are the choices of every surface argument). Its item
    catalogue, if any, is not read: the versions served carry their fields."""
    pre = argparse.ArgumentParser(add_help=False)
    _vocabulary_option(pre)
    known, _ = pre.parse_known_args(argv)
    path = (
        known.vocabulary
        or os.environ.get("PINREC_VOCABULARY")
        or default_vocabulary_file(os.environ.get("PINREC_SOURCE") or "simulated")
    )
    return load_vocabulary(path, read_catalogue=False)  # a version carries its catalogue fields


def build_parser(vocabulary: Vocabulary | None = None) -> argparse.ArgumentParser:
    SURFACES = list((vocabulary or load_cli_vocabulary([])).surfaces)  # noqa: N806 - the choices
    p = argparse.ArgumentParser(
        prog="python -m serving.service.cli", description="Published PinRec versions (S3) and the retrieval service."
    )
    _vocabulary_option(p)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the retrieval service (FastAPI + uvicorn)")
    s.add_argument(
        "--surface", action="append", required=True, choices=SURFACES, help="surface to serve (repeat for several)"
    )
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, choices=range(1, 65536), metavar="PORT")
    s.add_argument("--cache-dir", default="var/serving-cache", help="local copies of versions")
    s.add_argument("--poll-interval", type=float, default=5.0, help="seconds between pointer polls")
    s.add_argument(
        "--retry-after", type=float, default=30.0, help="seconds before retrying a version that failed to load"
    )
    s.add_argument(
        "--features",
        choices=["feast", "none"],
        default="feast",
        help="where user sequences come from (none: recent_events only)",
    )
    s.add_argument(
        "--feast-data-dir",
        help="Feast data dir (registry, online store); default: the main "
        "command's ($PINREC_DATA_DIR/feast, else var/$PINREC_SOURCE/feast)",
    )
    s.add_argument("--feast-config", help="feature_store.yaml (default feature_repo/feature_store.yaml)")
    s.add_argument("--faiss-threads", type=int, default=1)
    s.add_argument("--torch-threads", type=int, default=1)
    s.add_argument("--max-body-bytes", type=int, default=64 * 1024)
    s.add_argument(
        "--max-wait-ms",
        type=float,
        default=2.0,
        help="longest a request is held back to gather a micro-batch (default 2)",
    )
    s.add_argument("--max-batch", type=int, default=64, help="requests per micro-batch at most")
    s.add_argument(
        "--encoder-cache-mb",
        type=float,
        default=256.0,
        help="memory for per-user encoder states (keys/values of the history); 0: off",
    )
    s.add_argument(
        "--recommend-candidates",
        type=int,
        default=200,
        help="/v1/recommend: candidates retrieved, then ranked by the ranking head (default 200)",
    )
    s.add_argument(
        "--inline",
        action="store_true",
        help="serve each request on the event loop as a batch of one (no micro-batching)",
    )
    s.add_argument("--log-level", default="info")
    s.add_argument("--access-log", action="store_true")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("versions", help="list visible versions (with a manifest) of a surface")
    s.add_argument("surface", choices=SURFACES)
    s.set_defaults(fn=cmd_versions)

    s = sub.add_parser("show", help="print a version's manifest")
    s.add_argument("surface", choices=SURFACES)
    s.add_argument("version")
    s.set_defaults(fn=cmd_show)

    s = sub.add_parser("promote", help="point champion.json at a version")
    s.add_argument("surface", choices=SURFACES)
    s.add_argument("version")
    s.add_argument(
        "--allow-older",
        action="store_true",
        help="promote even when the champion trained on newer data (refused by default)",
    )
    s.set_defaults(fn=cmd_promote)

    s = sub.add_parser("rollback", help="point champion.json back at the previous champion")
    s.add_argument("surface", choices=SURFACES)
    s.add_argument("--to", help="a specific version instead of the previous one")
    s.set_defaults(fn=cmd_rollback)

    s = sub.add_parser("canary", help="set or clear canary.json (traffic fraction by user hash)")
    s.add_argument("surface", choices=SURFACES)
    s.add_argument("version", nargs="?")
    s.add_argument("--traffic", type=fraction, help="fraction of users in [0, 1]")
    s.add_argument("--clear", action="store_true", help="remove the canary")
    s.set_defaults(fn=cmd_canary)

    s = sub.add_parser("retain", help="delete old versions no pointer names")
    s.add_argument("surface", choices=SURFACES)
    s.add_argument("--keep", type=positive_int, required=True, help="newest versions to keep")
    s.add_argument("--dry-run", action="store_true")
    s.set_defaults(fn=cmd_retain)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        vocabulary = load_cli_vocabulary(sys.argv[1:] if argv is None else argv)
    except VocabularyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = build_parser(vocabulary).parse_args(argv)
    args.vocabulary_loaded = vocabulary
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except (RegistryError, ValueError, LookupError, S3Unavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
