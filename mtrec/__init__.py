"""mtrec: multi-task and multi-scenario recommendation models from one config file.

The API mirrors the CLI verbs. TensorFlow is imported only when a verb runs, so
`import mtrec` (and `mtrec --help`) stays fast.
"""
__version__ = "0.1.0"


def check(config=None, **kwargs):
    """Validate a config and describe its model (the lines `mtrec check` prints); see
    mtrec.api.check."""
    from mtrec import api
    return api.check(config, **kwargs)


def train(config=None, **kwargs):
    """Train from a config path or PipelineConfig; see mtrec.api.train."""
    from mtrec import api
    return api.train(config, **kwargs)


def evaluate(config=None, **kwargs):
    """Evaluate a checkpoint; see mtrec.api.evaluate."""
    from mtrec import api
    return api.evaluate(config, **kwargs)


def export(config=None, **kwargs):
    """Export a SavedModel; see mtrec.api.export."""
    from mtrec import api
    return api.export(config, **kwargs)


def predict(saved_model, *args, **kwargs):
    """Score a file with an exported SavedModel; see mtrec.api.predict."""
    from mtrec import api
    return api.predict(saved_model, *args, **kwargs)
