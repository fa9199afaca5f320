"""`mtrec train|evaluate|export|predict|check`.

TensorFlow is imported only by the verbs that need it. Every failure ends in one
message (`mtrec: error: ...`) and exit code 1, never a traceback: `main` is the one
place that turns a known failure class into a message naming the command and what to
do (see mtrec.errors.describe); `--verbose` prints the traceback too.
"""
import argparse
import json
import logging
import os
import re
import sys
import tempfile
import traceback

from mtrec.errors import describe


def _add_config_args(parser, required=True):
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--config", "--pipeline_config_path", dest="config",
                        help="pipeline config (protobuf text format)")
    parser.add_argument("--model_dir", help="overrides model_dir of the config")
    parser.add_argument("--edit_config_json", help="EasyRec-style JSON of {\"path\": value} "
                        "overrides, e.g. '{\"data_config.batch_size\": 512}'")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="PATH=VALUE",
                        help="one override, e.g. --set train_config.num_steps=100 (repeatable)")
    parser.add_argument("--skip_memory_check", action="store_true",
                        help="do not refuse a model whose estimated training memory exceeds "
                        "the memory available (for users who know it fits)")
    return source


def _add_checkpoint_arg(parser) -> None:
    parser.add_argument("--checkpoint", "--checkpoint_path", dest="checkpoint",
                        metavar="best|latest|PATH",
                        help="\"best\" (the best evaluated checkpoint, model_dir/best/), "
                        "\"latest\", or a checkpoint path or directory (default: "
                        "export_config.default_checkpoint, \"best\": the best one when "
                        "training evaluated, else the latest)")


_VERBOSE_HELP = "log TensorFlow messages, and print the traceback of an error"


def _version() -> str:
    from importlib import metadata
    try:
        return metadata.version("mtrec")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        import mtrec
        return mtrec.__version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtrec", description=(
        "Train, evaluate and export multi-task / multi-scenario recommendation models "
        "from one EasyRec-style config."))
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    # -v also after the command (`mtrec train --config x -v`); SUPPRESS keeps a -v given
    # before the command from being reset by the subcommand's default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help=_VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", parents=[common], help="train a model (resumes from model_dir)")
    _add_config_args(p)

    p = sub.add_parser("evaluate", parents=[common],
                       help="evaluate a checkpoint, append to eval_result.txt")
    _add_config_args(p, required=False)
    p.add_argument("--eval_input_path", help="overrides eval_input_path")
    _add_checkpoint_arg(p)
    p.add_argument("--continuous", action="store_true",
                   help="evaluate every new checkpoint while training runs, until num_steps")
    p.add_argument("--timeout", type=float,
                   help="with --continuous: stop after this many seconds without a new one")

    p = sub.add_parser("export", parents=[common],
                       help="export a SavedModel to EXPORT_DIR/<unix_ts>/")
    _add_config_args(p, required=False)
    p.add_argument("--export_dir", required=True)
    _add_checkpoint_arg(p)

    p = sub.add_parser("predict", parents=[common],
                       help="score a file with an exported SavedModel")
    p.add_argument("--saved_model", required=True, help="an export_dir/<ts>/ directory")
    p.add_argument("--input", required=True, help="rows in the training data's format")
    p.add_argument("--output", required=True, help="CSV to write (with a header)")
    p.add_argument("--reserved_cols", default="", help="input columns copied to the output")
    p.add_argument("--output_cols", default="", help="outputs to write (default: all)")
    p.add_argument("--batch_size", type=int, default=1024)

    p = sub.add_parser("check", parents=[common],
                       help="parse and validate a config without training")
    _add_config_args(p)
    p.add_argument("--skip_data_check", action="store_true",
                   help="do not look at the input files (their paths and CSV headers)")
    return parser


def _setup_logging(verbose: bool) -> None:
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    if not verbose:
        try:
            import absl.logging
            absl.logging.set_verbosity(absl.logging.ERROR)
        except ImportError:
            pass


# An absl log line of TensorFlow's C++ code:
#   I0000 00:00:1796547887.524069   25129 port.cc:153] oneDNN custom operations are on. ...
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ (\S+:\d+\] .*)$")
_ABSL_LEVELS = "IWEF"  # TF_CPP_MIN_LOG_LEVEL 0..3 hides the levels below it
_PY_WARNING = re.compile(r"^\S.*:\d+: \w*Warning: ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"


def startup_lines(text: str, min_level: int) -> list[str]:
    """TensorFlow's start-up output (stderr of `import tensorflow`) as it should be shown:
    each message once, and none below TF_CPP_MIN_LOG_LEVEL.

    TensorFlow's C++ code logs through absl before absl::InitializeLog() is called, when
    absl ignores TF_CPP_MIN_LOG_LEVEL and writes every message to stderr; and two of its
    libraries (_pywrap_tensorflow_internal and the profiler plugin `import tensorflow`
    also loads) each hold their own copy of that code, so every start-up message (oneDNN,
    CUDA drivers) comes twice. A line that is no absl message (a Python warning) is kept
    unless the same line came before; lines that continue a message share its fate."""
    shown, seen, keep = [], set(), True
    for line in text.splitlines():
        match = _ABSL_LINE.match(line)
        if match:  # its key leaves out the time and thread id, which differ
            key = match.group(1) + match.group(2)
            keep = _ABSL_LEVELS.index(match.group(1)) >= min_level and key not in seen
        elif line.startswith(_ABSL_PREAMBLE):
            key, keep = line, min_level <= 1 and line not in seen
        elif line.startswith(" ") or (not keep and not _PY_WARNING.match(line)):
            # a continuation of the message above
            key = None
        else:
            key, keep = line, line not in seen
        if key is not None:
            seen.add(key)
        if keep and line.strip():
            shown.append(line)
    return shown


def _import_tensorflow() -> None:
    """Import TensorFlow with its start-up output filtered by startup_lines: the C++ code
    writes to file descriptor 2 directly, so that is what is captured."""
    try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        level = 0
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            for line in startup_lines(text, level):
                print(line, file=sys.stderr)


def _split(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _check(args) -> int:
    import mtrec
    for line in mtrec.check(args.config, model_dir=args.model_dir,
                            edit_config_json=args.edit_config_json, sets=args.sets,
                            skip_memory_check=args.skip_memory_check,
                            skip_data_check=args.skip_data_check):
        print(line)
    return 0


def run(argv=None) -> int:
    return _dispatch(build_parser().parse_args(argv))


def _dispatch(args) -> int:
    _setup_logging(getattr(args, "verbose", False))
    if "tensorflow" not in sys.modules:  # every verb needs it (run() may come twice)
        _import_tensorflow()
    import mtrec
    if args.command == "check":
        return _check(args)
    if args.command == "train":
        result = mtrec.train(args.config, model_dir=args.model_dir,
                             edit_config_json=args.edit_config_json, sets=args.sets,
                             skip_memory_check=args.skip_memory_check)
        if result:
            print(json.dumps(result))
    elif args.command == "evaluate":
        print(json.dumps(mtrec.evaluate(args.config, model_dir=args.model_dir,
                                        eval_input_path=args.eval_input_path,
                                        checkpoint=args.checkpoint,
                                        edit_config_json=args.edit_config_json, sets=args.sets,
                                        continuous=args.continuous, timeout=args.timeout,
                                        skip_memory_check=args.skip_memory_check)))
    elif args.command == "export":
        print(mtrec.export(args.config, export_dir=args.export_dir, model_dir=args.model_dir,
                           checkpoint=args.checkpoint, edit_config_json=args.edit_config_json,
                           sets=args.sets, skip_memory_check=args.skip_memory_check))
    elif args.command == "predict":
        mtrec.predict(args.saved_model, input=args.input, output=args.output,
                      reserved_cols=_split(args.reserved_cols),
                      output_cols=_split(args.output_cols), batch_size=args.batch_size)
    return 0


def main(argv=None) -> None:
    """The error boundary: whatever fails below ends here as one line on stderr (with the
    traceback first under --verbose) and exit code 1; Ctrl-C exits 130."""
    args = build_parser().parse_args(argv)  # usage errors: argparse's message, exit 2
    try:
        code = _dispatch(args)
    except KeyboardInterrupt:
        if args.verbose:
            traceback.print_exc()
        print("mtrec: interrupted; the last checkpoint in model_dir is intact."
              if args.command == "train" else f"mtrec: {args.command} interrupted.",
              file=sys.stderr)
        code = 130
    except Exception as e:
        if args.verbose:
            traceback.print_exc()
        print(f"mtrec: error: {describe(e, args.command, args.verbose)}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
