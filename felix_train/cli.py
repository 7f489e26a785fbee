"""`felix-train` (also `python -m felix_train`): one table of commands, each importing what it needs.

`felix-train SPEC` and `felix-train run SPEC` run a job. `validate`, `datasets`,
`models` and `jobs` never import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from felix_train.cli_jobs import cmd_jobs


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    for r in rows:
        lines.append("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))
    return "\n".join(lines)


# -- run / validate ---------------------------------------------------------------------

def cmd_run(args) -> int:
    from felix_train.runner import run_job

    return run_job(args.spec, job_id=args.job_id, home=args.home)


def cmd_validate(args) -> int:
    from felix_train.errors import SpecError
    from felix_train.runner import _spec_exit_code
    from felix_train.spec import load_spec

    try:
        spec = load_spec(args.spec, home=args.home, check_datasets=not args.no_datasets)
    except SpecError as err:
        if args.json:
            _print_json({"detail": err.to_list()})
        else:
            print(str(err), file=sys.stderr)
        return int(_spec_exit_code(err))
    if not args.no_datasets:  # the length policy: a record `run` would refuse is refused here, with file and line
        from felix_train.errors import DatasetError
        from felix_train.estimate import check_lengths

        try:
            check_lengths(spec, args.home)
        except DatasetError as err:
            if args.json:
                _print_json({"detail": err.to_list()})
            else:
                print(str(err), file=sys.stderr)
            return 3
    _print_json(spec.to_json())
    return 0


def cmd_estimate(args) -> int:
    from felix_train.estimate.cli import main as estimate_main

    return estimate_main(args)


# -- datasets ---------------------------------------------------------------------------

def cmd_datasets(args) -> int:
    from felix_train.data.registry import DatasetRegistry
    from felix_train.errors import DatasetError

    reg = DatasetRegistry(args.home)
    try:
        if args.action == "add":
            m = reg.add(args.name, args.file, overwrite=args.overwrite)
            data = m.model_dump(mode="json")
            state = str(data.get("state"))
            if state != "ready":
                print(f"dataset {args.name!r} is {state}:", file=sys.stderr)
                for e in (data.get("errors") or [])[:50]:
                    print(f"  line {e.get('line')}: {e.get('msg')} [{e.get('type')}]", file=sys.stderr)
                return 3
            print(f"dataset {m.name!r} ready: {m.num_records} records, format {data.get('format')}")
            return 0
        if args.action == "list":
            rows = [m.model_dump(mode="json") for m in reg.list()]
            print(_table(rows, ["name", "state", "format", "num_records", "created_at"]))
            return 0
        if args.action == "show":
            _print_json(reg.get(args.name).model_dump(mode="json"))
            return 0
        if args.action == "delete":
            reg.delete(args.name)
            print(f"dataset {args.name!r} deleted")
            return 0
    except DatasetError as err:
        print(str(err), file=sys.stderr)
        return 3
    return 2


# -- models ---------------------------------------------------------------------------

def cmd_models(args) -> int:
    from felix_train.catalog import CATALOG

    if args.json:
        _print_json([e.model_dump(mode="json") for e in CATALOG])
        return 0
    rows = [{"id": e.id, "family": e.family.value, "training_types": ",".join(t.value for t in e.training_types),
             "algorithms": ",".join(a.value for a in e.algorithms), "epochs": e.default_num_epochs,
             "source": "/".join(s.kind.value for s in e.sources)} for e in CATALOG]
    print(_table(rows, ["id", "family", "training_types", "algorithms", "epochs", "source"]))
    return 0


# -- eval -----------------------------------------------------------------------------

def cmd_eval(args) -> int:
    """`eval SOURCE DATA`: the report as text, or as exactly one JSON object on stdout (`--json`; logs on stderr)."""
    import contextlib

    from felix_train.errors import FelixError

    try:
        with contextlib.redirect_stdout(sys.stderr):  # libraries that print keep stdout clean
            from felix_train.evaluate import evaluate, format_report

            report = evaluate(args.source, args.data, threshold=args.threshold, labels_map=args.labels_map,
                              limit=args.limit, home=args.home, decoding=args.decoding)
    except (FelixError, OSError) as err:
        message = " ".join(str(err).split())
        print(f"error: {message}", file=sys.stderr)
        if args.json:
            print(json.dumps({"error": message}))
        return int(getattr(err, "exit_code", 1))
    print(json.dumps(report, default=str) if args.json else format_report(report))
    return 0


# -- service (its own argument parsers; imported only when used) ---------------------------

SERVICE_COMMANDS = {
    "worker": "felix_train.service.worker:main",
    "serve": "felix_train.service.api:main",
    "users": "felix_train.service.store:users_main",
    "db": "felix_train.service.store:db_main",
}


def _service_argv(argv: list[str]) -> tuple[str, list[str]] | None:
    """`[--home H] worker|serve|users|db ARGS...` → (command, ARGS with --home carried over)."""
    home, i = None, 0
    while i < len(argv):
        if argv[i] == "--home" and i + 1 < len(argv):
            home, i = argv[i + 1], i + 2
        elif argv[i].startswith("--home="):
            home, i = argv[i].split("=", 1)[1], i + 1
        else:
            break
    if i < len(argv) and argv[i] in SERVICE_COMMANDS:
        rest = argv[i + 1:]
        return argv[i], (["--home", home] if home and "--home" not in rest else []) + rest
    return None


def run_service(command: str, argv: list[str]) -> int:
    import importlib

    module, func = SERVICE_COMMANDS[command].split(":")
    return int(getattr(importlib.import_module(module), func)(argv) or 0)


COMMANDS = {
    "run": {"help": "run a job to its end (also: felix-train SPEC)", "fn": cmd_run},
    "validate": {"help": "validate a spec: the resolved spec or every error (exit 2 spec, 3 dataset)", "fn": cmd_validate},
    "estimate": {"help": "records, tokens, steps, time and memory of a spec before it runs (nothing runs)",
                 "fn": cmd_estimate},
    "datasets": {"help": "add|list|show|delete datasets in $FELIX_HOME/datasets", "fn": cmd_datasets},
    "models": {"help": "list the base-model catalog", "fn": cmd_models},
    "jobs": {"help": "list|show|logs|events|checkpoints|stop|delete|deploy|undeploy jobs in $FELIX_HOME/jobs",
             "fn": cmd_jobs},
    "eval": {"help": "score a job, model folder or base model on a test file (figures follow the data)", "fn": cmd_eval},
    "worker": {"help": "claim and run queued jobs (felix-train worker --help)", "fn": None},
    "serve": {"help": "serve the Felix REST API (felix-train serve --help)", "fn": None},
    "users": {"help": "manage API users: users add NAME prints a new API key once", "fn": None},
    "db": {"help": "the store's schema: db upgrade migrates it (serve and worker do on start), db current", "fn": None},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="felix-train", description="Fine-tune GLiNER2 encoders and LLMs from one job spec.")
    parser.add_argument("--home", default=None, help="$FELIX_HOME override (default ~/.felix)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd["help"])
        p.set_defaults(fn=cmd["fn"])
        p.add_argument("--home", default=argparse.SUPPRESS, help="$FELIX_HOME override")
        if name == "run":
            p.add_argument("spec")
            p.add_argument("--job-id", default=None, help="job folder id; the same id resumes the job")
        elif name == "validate":
            p.add_argument("spec")
            p.add_argument("--json", action="store_true", help="errors as a 422-style JSON body")
            p.add_argument("--no-datasets", action="store_true", help="skip the dataset registry checks")
        elif name == "estimate":
            p.add_argument("spec")
            p.add_argument("--json", action="store_true", help="one JSON object")
            p.add_argument("--device", default=None, help="cpu or cuda (default: this machine's)")
            p.add_argument("--no-probe", action="store_true", help="without a table row, predict no time "
                           "rather than run a short probe")
        elif name == "datasets":
            ds = p.add_subparsers(dest="action", required=True)
            a = ds.add_parser("add")
            a.add_argument("name")
            a.add_argument("file")
            a.add_argument("--overwrite", action="store_true")
            ds.add_parser("list")
            ds.add_parser("show").add_argument("name")
            ds.add_parser("delete").add_argument("name")
        elif name == "models":
            ms = p.add_subparsers(dest="action", required=True)
            ms.add_parser("list").add_argument("--json", action="store_true")
        elif name == "jobs":
            js = p.add_subparsers(dest="action", required=True)
            js.add_parser("list")
            for action in ("show", "checkpoints", "stop", "delete", "logs", "events"):
                ap = js.add_parser(action)
                ap.add_argument("id")
                if action == "events":
                    ap.add_argument("--after", type=int, default=0, help="only events with a larger id")
                    ap.add_argument("--json", action="store_true", help="one JSON object a line")
                if action in ("logs", "events"):
                    ap.add_argument("-f", "--follow", action="store_true",
                                    help="follow until the job ends (a queued job: wait for it to start)")
                    ap.add_argument("--database-url", default=None,
                                    help="the store that knows queued jobs (default $FELIX_DATABASE_URL, else "
                                         "$FELIX_HOME/felix.db if it exists)")
                if action == "checkpoints":
                    ap.add_argument("--json", action="store_true")
                if action == "delete":
                    ap.add_argument("--force", action="store_true")
            for action, what in (("deploy", "serve a complete job's model (a worker of the store runs it)"),
                                 ("undeploy", "stop serving it (complete again)")):
                ap = js.add_parser(action, help=what)
                ap.add_argument("id")
                ap.add_argument("--database-url", default=None,
                                help="SQLAlchemy URL (default $FELIX_DATABASE_URL, else SQLite at $FELIX_HOME/felix.db)")
                if action == "deploy":
                    ap.add_argument("--wait", action="store_true", help="wait until deployed (or failed)")
                    ap.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits (default 600)")
        elif name == "eval":
            p.add_argument("source", help="job id, job folder, model folder, or catalog id (the untrained base)")
            p.add_argument("data", help="test file (JSONL); its format picks the figures")
            p.add_argument("--threshold", type=float, default=None,
                           help="NER decision threshold (default: the model's saved thresholds, else 0.5)")
            p.add_argument("--decoding", choices=("flat", "nested"), default=None, help="NER: flat keeps the best of "
                           "overlapping spans of any label (default: the model's saved decoding, else nested)")
            p.add_argument("--labels-map", default=None, metavar="A=B,C=B",
                           help="NER: ask the model for labels A and C, score them as the test file's B")
            p.add_argument("--limit", type=int, default=None, help="score only the first N records")
            p.add_argument("--json", action="store_true", help="print one JSON object (logs go to stderr)")
    return parser


GLOBAL_OPTIONS_WITH_VALUE = ("--home",)
"""Options before the command that take a value (`felix-train --home DIR eval ...`)."""


def _first_word(argv: list[str]) -> str | None:
    """The first argument that is neither an option nor a global option's value."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in GLOBAL_OPTIONS_WITH_VALUE:
            skip = True
            continue
        if not arg.startswith("-"):
            return arg
    return None


EXIT_BROKEN_PIPE = 141
"""The reader of our output went away (`felix-train jobs show ID | head`): 128 + SIGPIPE, as a shell reports it."""


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code. A closed stdout (`| head`) ends it quietly with 141, not a traceback."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit: a broken pipe must surface inside the try
    except BrokenPipeError:
        # Python's recommended handling: point stdout at devnull, so the flush at exit does not fail again
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # no real stdout (an embedding caller's stream)
            pass
        return EXIT_BROKEN_PIPE
    return code


def _bad_job_id(args) -> str | None:
    """The error for a malformed job id (`--job-id ../../escape`, `jobs show ../x`) before anything runs, else None."""
    from felix_train.jobs import validate_job_id

    for name in ("job_id", "id"):
        value = getattr(args, name, None)
        if value is not None:
            try:
                validate_job_id(value)
            except ValueError as err:
                return f"felix-train: {err}"
    return None


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    service = _service_argv(argv)
    if service is not None:  # the worker sets each job's FELIX_CONCURRENT_JOBS; its jobs apply the policy themselves
        return run_service(*service)
    # before anything imports torch: OMP_WAIT_POLICY=PASSIVE and the CPUs divided among the jobs run at once
    from felix_train.perf.threads import apply_process_policy

    apply_process_policy()
    # `felix-train SPEC [--job-id ID]` is the run command (`python -m felix_train SPEC`).
    first = _first_word(argv)
    if first is not None and first not in COMMANDS and (os.path.exists(first) or first.endswith((".yaml", ".yml", ".json"))):
        argv = ["run", *argv]
    args = build_parser().parse_args(argv)
    bad = _bad_job_id(args)
    if bad is not None:
        print(bad, file=sys.stderr)
        return 2
    return int(args.fn(args) or 0)
