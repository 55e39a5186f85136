"""Command line: ``autocompress search | plugins``. Heavy imports stay inside the commands."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from autocompress.errors import AutocompressError, InputError

EXIT_OK = 0
EXIT_NOTHING_FEASIBLE = 5
EXIT_INTERRUPTED = 130

EXIT_CODES = """exit codes: 0 done (a model meets the limits) | 1 internal error | 2 bad input |
3 broken plugin | 4 demo data unavailable | 5 no candidate met the limits (nearest shown) |
130 interrupted by Ctrl-C or SIGTERM (results so far written; a second one quits at once, re-run to resume)"""


def _add_search_options(parser: argparse.ArgumentParser) -> None:
    from autocompress.config import OPTIONS

    parser.add_argument("--config", type=Path, help="YAML file with any of the options below")
    for name, (kind, help_text) in OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=name, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, default=None, help=help_text,
                                type=str if kind in (list, Path) else kind)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autocompress",
        description="Search combinations of compression techniques for a transformer classifier and "
        "a target machine; report the Pareto front and export the best model.",
        epilog=EXIT_CODES,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", help="run (or resume) a search; no options = the default demo",
                                 epilog=EXIT_CODES)
    _add_search_options(search)
    report = commands.add_parser("report", help="render report.html/report.md from a run's stored study",
                                 description="Render the report of a finished, interrupted or multi-worker "
                                 "search from its study (RUN_DIR, or --storage URL --study NAME).")
    report.add_argument("run_dir", nargs="?", type=Path, help="run directory written by 'autocompress search'")
    report.add_argument("--storage", help="Optuna storage URL (instead of RUN_DIR)")
    report.add_argument("--study", help="study name in --storage")
    report.add_argument("--out", type=Path, help="where to write the report (default: RUN_DIR, or runs/<study>)")
    export = commands.add_parser("export", help="write one candidate as a shippable directory with a model card")
    export.add_argument("run_dir", type=Path, help="run directory written by 'autocompress search'")
    export.add_argument("--to", type=Path, required=True, help="new directory to write")
    export.add_argument("--trial", type=int, help="trial number (default: the recommended model)")
    export.add_argument("--onnx", action="store_true",
                        help="also write model.onnx and check ONNX Runtime's predictions against PyTorch")
    export.add_argument("--storage", help="Optuna storage URL when the study is not in RUN_DIR")
    export.add_argument("--study", help="study name in --storage")
    export.add_argument("--license", help="license id for the model card (default: the base model's own)")
    export.add_argument("--push-to-hub", metavar="REPO", help="then upload the folder to this Hugging Face Hub "
                        "model repository (owner/name; needs `hf auth login`)")
    export.add_argument("--dry-run", action="store_true",
                        help="with --push-to-hub: print what would be uploaded (files, sizes, card metadata) and "
                        "upload nothing")
    plugins = commands.add_parser("plugins", help="list techniques, targets, tasks and where they came from")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.add_argument("--disable", default="", help="comma-separated plugin names to block")
    return parser


def cmd_search(args: argparse.Namespace) -> int:
    from autocompress.api import run_options
    from autocompress.config import OPTIONS, merge_options, settings_from_options

    options = merge_options(args.config, {name: getattr(args, name) for name in OPTIONS})
    stop = _stop_handler()
    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        _, outcome = run_options(options, command=tuple(args.argv))
    except KeyboardInterrupt:
        print(f"interrupted; results so far are in {settings_from_options(options).out_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(summary(outcome))
    return EXIT_OK if outcome.found else EXIT_NOTHING_FEASIBLE


def _stop_handler():
    """Handler for SIGINT and SIGTERM alike. The first stops the search gracefully: it raises
    KeyboardInterrupt, the trial in flight is recorded as interrupted and the results so far are
    written. A second one exits at once; the study stays intact, because every write to it is one
    database transaction, and re-running the command resumes it and rewrites the results."""
    received: list[int] = []

    def stop(signum, frame):
        if received:
            os.write(2, b"\nautocompress: stopped at once; the study is intact but trials.csv/pareto.json may be "
                        b"out of date: re-run the same command to resume and rewrite them\n")
            os._exit(EXIT_INTERRUPTED)
        received.append(signum)
        raise KeyboardInterrupt

    return stop


def summary(outcome) -> str:
    from autocompress.metrics import metric_named
    from autocompress.study.layout import RunLayout

    doc = outcome.document
    base = doc["baseline"]
    metric = metric_named(_quality(outcome.out_dir))  # shows each figure as people read it (perplexity, ...)
    shown = metric.display
    short = "acc" if metric.shown_as() == "accuracy" else metric.shown_as()
    lines = [
        f"study '{outcome.study_name}': {outcome.trials} trials{_queued(outcome.queued)}; results in "
        f"{outcome.out_dir}",
        f"teacher: test {metric.shown_as()} {shown(base['test_accuracy'])} "
        f"(validation {shown(base['val_accuracy'])}), "
        f"{base['latency_ms']:.2f} ms, {base['memory_mb']:.1f} MB"
        + _teacher_training(outcome.out_dir),
        "Pareto front (feasible):",
    ]
    for row in doc["front"]:
        lines.append(
            f"  #{row['trial']:>3}  test {short} {shown(row['test_accuracy'])}  "
            f"val {short} {shown(row['val_accuracy'])}  "
            f"{row['latency_ms']:7.2f} ms "
            f"({row['speedup']:.2f}x vs teacher measured beside it)  {row['memory_mb']:7.1f} MB "
            f"({base['memory_mb'] / row['memory_mb']:.2f}x)  {row['plan']}"
        )
    if not doc["front"]:
        lines.append("  (none)")
    if doc["recommended"] is not None:
        lines.append(f"recommended: trial #{doc['recommended']} -> {RunLayout(outcome.out_dir).best}")
    else:
        lines.append("no candidate met the limits; nearest candidates:")
        for near in doc.get("nearest", []):
            missed = ", ".join(f"{k} by {v:g}" for k, v in near["missed_by"].items()) or "accuracy not measured"
            lines.append(f"  #{near['trial']}: {near['plan']} (missed {missed})")
    return "\n".join(lines)


def _queued(queued: int) -> str:
    """' (N more starting points queued ...)' when the budget ended before every starting point ran."""
    if not queued:
        return ""
    return (f" ({queued} more starting point{'s' if queued > 1 else ''} queued, not run: a larger --trials "
            "runs them first)")


def _quality(out_dir: Path) -> str:
    """The metric the run measured (run.json ``quality_metric``; accuracy when unreadable)."""
    from autocompress.study.record import quality_name

    try:
        return quality_name(json.loads((out_dir / "run.json").read_text()))
    except (OSError, ValueError):
        return "accuracy"


def _teacher_training(out_dir: Path) -> str:
    """'; fine-tuned from X ...' when this run fine-tuned its teacher from a base model (run.json says)."""
    from autocompress.teacher import how_made, no_better_than_majority, validation_score, what_to_try

    try:
        training = json.loads((out_dir / "run.json").read_text()).get("task_info", {}).get("teacher_training")
    except (OSError, ValueError):
        return ""
    if not training:
        return ""
    text = f"\n  {how_made(training)}, {validation_score(training)}"
    if "trained_now" in training:
        when = "trained now" if training.get("trained_now") else "reused from the cache"
        text += f"; {when}: {training.get('directory')}"
    majority = no_better_than_majority(training)
    if majority is not None:
        text += (f"\n  warning: that is no better than always answering the most frequent class ({majority:.4f}): "
                 f"the teacher has not learned the task; {what_to_try(training)}")
    return text


def _load_run(args: argparse.Namespace):
    from autocompress.report import load_run, storage_of_run_dir

    if args.storage or args.study:
        if not (args.storage and args.study):
            raise InputError("--storage and --study go together (the study's database URL and its name)")
        return load_run(args.storage, args.study)
    if args.run_dir is None:
        raise InputError("give a run directory, or --storage URL --study NAME")
    if not args.run_dir.is_dir():
        raise InputError(f"{args.run_dir}: no such run directory")
    return load_run(*storage_of_run_dir(args.run_dir))


def cmd_report(args: argparse.Namespace) -> int:
    from autocompress.plugin_manager import build_host
    from autocompress.report import write_report
    from autocompress.study import results
    from autocompress.study.layout import RunLayout

    run = _load_run(args)
    out = args.out or args.run_dir or Path("runs") / run.study.study_name
    files = write_report(run, out, build_host())
    for error in files.errors:
        print(f"warning: {error}", file=sys.stderr)
    results.write_tables(run.frame, run.document, RunLayout(out))
    print(f"report: {files.html}\nmarkdown: {files.markdown}\nplots: {', '.join(str(p) for p in files.plots.values())}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from autocompress.export import export

    if not args.run_dir.is_dir():
        raise InputError(f"{args.run_dir}: no such run directory")
    if args.dry_run and not args.push_to_hub:
        raise InputError("--dry-run goes with --push-to-hub REPO (it shows what would be uploaded)")
    if args.push_to_hub:
        from autocompress.export import check_repo_id

        check_repo_id(args.push_to_hub)  # before the export, which may take a while (--onnx)
    written = export(args.run_dir, _load_run(args), args.to, args.trial, args.onnx, license=args.license,
                     name=args.push_to_hub)
    loads = ("transformers.pipeline loads it as it is" if written["plain_transformers"] else
             "transformers.pipeline loads it with trust_remote_code=True (autocompress_model.py calls "
             "autocompress.load_pretrained)")
    print(f"exported trial #{written['trial']} to {written['directory']} (model card: README.md; {loads})")
    if "onnx" in written:
        check = written["onnx"]["check"]
        kernels = " (int8 kernels: compared where PyTorch's top two logits are clearly apart)" if check["int8"] else ""
        print(f"onnx: {written['onnx']['path']}: ONNX Runtime's predictions agree with PyTorch's on "
              f"{check['predictions_compared']} of {check['predictions']} {check['unit']}{kernels} "
              f"(largest logit difference {check['max_abs_logit_difference']:.2g})")
    if args.push_to_hub:
        from autocompress.export import push_to_hub

        print(push_to_hub(Path(written["directory"]), args.push_to_hub, dry_run=args.dry_run))
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    from autocompress import __version__
    from autocompress.hookspecs import PLUGIN_API_VERSION
    from autocompress.plugin_manager import build_host

    host = build_host(disabled=[d for d in args.disable.split(",") if d])
    rows = []
    for kind, registry in (("technique", host.techniques), ("target", host.targets), ("task", host.tasks),
                           ("architecture", host.architectures)):
        for entry in registry:
            rows.append({"kind": kind, "name": entry.name, "plugin": entry.provenance.plugin,
                         "distribution": entry.provenance.distribution,
                         "version": getattr(entry.cls, "version", ""),
                         "description": getattr(entry.cls, "description", "")})
    broken = [{"plugin": p.name, "distribution": p.distribution, "error": p.error} for p in host.broken]
    plugins = [{"plugin": p.name, "distribution": p.distribution, "module": p.module, "api": p.api,
                "error": p.error, "deprecations": p.deprecations} for p in host.plugins]
    if args.json:
        print(json.dumps({"autocompress": __version__, "plugin_api": PLUGIN_API_VERSION, "registered": rows,
                          "broken": broken, "plugins": plugins}, indent=2))
        return EXIT_OK
    print(f"autocompress {__version__}, plugin API {PLUGIN_API_VERSION}")
    for row in rows:
        print(f"{row['kind']:<12} {row['name']:<16} {row['distribution']:<24} {row['description']}")
    for row in broken:
        print(f"BROKEN       {row['plugin']:<16} {row['distribution']:<24} {row['error']}")
    for row in plugins:
        for deprecation in row["deprecations"]:
            print(f"DEPRECATED   {row['plugin']:<16} {row['distribution']:<24} {deprecation}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    handlers = {"search": cmd_search, "report": cmd_report, "export": cmd_export, "plugins": cmd_plugins}
    try:
        return handlers[args.command](args)
    except AutocompressError as exc:
        print(f"autocompress: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
