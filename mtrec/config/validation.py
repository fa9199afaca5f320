"""Validation: everything that can be checked before a graph is built, stage by stage.
It reads the config and never changes it (defaults are filled in before, by fill_defaults)."""
from mtrec.config.check_data import check_data
from mtrec.config.check_eval import check_eval
from mtrec.config.check_features import check_features
from mtrec.config.check_model import check_model
from mtrec.config.check_train import check_train
from mtrec.config.check_values import check_values
from mtrec.config.sizes import check_sizes
from mtrec.config.source import Problems, Source


def validate(pipeline, source: Source, skip_memory_check: bool = False) -> list[str]:
    """Check a config whose defaults are filled in; raise ConfigError listing every problem
    (each with file:line from `source`), return the warnings. skip_memory_check: do not
    weigh training's estimated peak memory against the memory available."""
    p = Problems(source)
    check_values(pipeline, p)
    inputs = check_data(pipeline, p)
    features, tables = check_features(pipeline, inputs, p)
    dense = check_model(pipeline, inputs, features, p)
    check_train(pipeline, p)
    check_eval(pipeline, inputs, p)
    check_sizes(pipeline, tables, dense, p, skip_memory_check)
    p.raise_errors()
    return p.warnings
