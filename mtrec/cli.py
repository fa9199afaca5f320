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
import sys
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


def _config(args):
    """The config the API gets: the --config path, or with --skip_memory_check the config
    loaded here without the memory check (the API's loading has it)."""
    if not args.skip_memory_check or not (args.config or args.model_dir):
        return args.config
    from mtrec import config as config_lib
    path = args.config or os.path.join(args.model_dir, "pipeline.config")
    return config_lib.load(path, args.edit_config_json, args.sets, args.model_dir,
                           skip_memory_check=True)


def _add_checkpoint_arg(parser) -> None:
    parser.add_argument("--checkpoint", "--checkpoint_path", dest="checkpoint_path",
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


def _split(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _check(args) -> int:
    from mtrec import config as config_lib
    loaded = config_lib.load(args.config, args.edit_config_json, args.sets, args.model_dir,
                             skip_memory_check=args.skip_memory_check)
    pipeline = loaded.pipeline
    from mtrec.protos import feature_pb2
    from mtrec.training.report import model_report
    features = config_lib.all_features(pipeline)
    print(f"{args.config}: OK")
    print(f"  model: {pipeline.model_config.model_class}")
    print(f"  inputs: {len(pipeline.data_config.input_fields)}, features: {len(features)}")
    for f in features:
        kind = feature_pb2.FeatureConfig.FeatureType.Name(f.feature_type)
        space = next((f"{name} {value}" for name, value in (
            ("hash_bucket_size", f.hash_bucket_size), ("num_buckets", f.num_buckets),
            ("vocab_list", len(f.vocab_list)), ("boundaries", len(f.boundaries))) if value),
            "vocab_file" if f.vocab_file else "raw values")
        print(f"    {config_lib.feature_name(f)}: {kind} ({space}), "
              f"embedding_dim {f.embedding_dim}")
    for g in pipeline.model_config.feature_groups:
        print(f"  group {g.group_name} ({feature_pb2.WideOrDeep.Name(g.wide_deep)}): "
              f"{', '.join(g.feature_names)}")
    print("  towers: " + ", ".join(
        f"{t.tower_name}({t.label_name})" for t in config_lib.task_towers(pipeline.model_config)))
    for line in model_report(pipeline):
        print(line)
    for warning in loaded.warnings:
        print(f"  warning: {warning}")
    return 0


def run(argv=None) -> int:
    return _dispatch(build_parser().parse_args(argv))


def _dispatch(args) -> int:
    _setup_logging(getattr(args, "verbose", False))
    import mtrec
    if args.command == "check":
        return _check(args)
    if args.command == "train":
        result = mtrec.train(_config(args), model_dir=args.model_dir,
                             edit_config_json=args.edit_config_json, sets=args.sets)
        if result:
            print(json.dumps(result))
    elif args.command == "evaluate":
        print(json.dumps(mtrec.evaluate(_config(args), model_dir=args.model_dir,
                                        eval_input_path=args.eval_input_path,
                                        checkpoint_path=args.checkpoint_path,
                                        edit_config_json=args.edit_config_json, sets=args.sets,
                                        continuous=args.continuous, timeout=args.timeout)))
    elif args.command == "export":
        print(mtrec.export(_config(args), export_dir=args.export_dir, model_dir=args.model_dir,
                           checkpoint_path=args.checkpoint_path,
                           edit_config_json=args.edit_config_json, sets=args.sets))
    elif args.command == "predict":
        mtrec.predict(args.saved_model, args.input, args.output,
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
