"""Validation of single values wherever they appear in a config, by field name: weights,
regularisation, dropout rates and optimizer settings must be in range (a negative task
weight maximises that task's loss; an infinite one makes every loss inf), and activation
names must be ones mtrec knows (mtrec.config.activations)."""
import math

from mtrec.config.activations import keras_activation, unknown_activation
from mtrec.config.source import Problems


def _at_least_zero(v):
    return math.isfinite(v) and v >= 0


def _positive(v):
    return math.isfinite(v) and v > 0


def _fraction(v):
    return 0 <= v < 1


_AT_LEAST_ZERO = "a finite number >= 0"
_RULES = {  # field name -> (test, what it must be); a learning rate of 0 freezes on purpose
    "learning_rate": (_at_least_zero, _AT_LEAST_ZERO),
    "initial_learning_rate": (_at_least_zero, _AT_LEAST_ZERO),
    "learning_rate_base": (_at_least_zero, _AT_LEAST_ZERO),
    "decay_factor": (_positive, "a finite number > 0"),
    "min_learning_rate": (_at_least_zero, _AT_LEAST_ZERO),
    "burnin_learning_rate": (_at_least_zero, _AT_LEAST_ZERO),
    "warmup_learning_rate": (_at_least_zero, _AT_LEAST_ZERO),
    "weight_decay": (_at_least_zero, _AT_LEAST_ZERO),
    "gradient_clipping_by_norm": (_at_least_zero, _AT_LEAST_ZERO),
    "initial_accumulator_value": (_at_least_zero, _AT_LEAST_ZERO),
    "momentum_optimizer_value": (_at_least_zero, _AT_LEAST_ZERO),
    "diag_scale": (_at_least_zero, _AT_LEAST_ZERO),
    "beta1": (_fraction, "in [0, 1)"),
    "beta2": (_fraction, "in [0, 1)"),
    "dropout_rate": (_fraction, "in [0, 1)"),
    "feature_dropout_rate": (_fraction, "in [0, 1)"),
}
# Suffixes of field names with one rule: task and loss weights, regularisation strengths.
_SUFFIX_RULES = (("weight", (_at_least_zero, _AT_LEAST_ZERO)),
                 ("regularization", (_at_least_zero, _AT_LEAST_ZERO)))
# Activation fields; those optional ones may be empty (no activation).
_ACTIVATIONS = ("activation", "final_activation")
_OPTIONAL_ACTIVATIONS = ("inner_activation", "generate_activation", "preactivation")


def _rule(name: str):
    rule = _RULES.get(name)
    if rule is None:
        rule = next((r for suffix, r in _SUFFIX_RULES
                     if name == suffix or name.endswith("_" + suffix)), None)
    return rule


def check_values(pipeline, p: Problems) -> None:
    """Every float field with a rule, and every activation name, of the whole config."""
    seen: dict = {}  # (field, value) -> times reported, for the nth line

    def report(message, field, value):
        key = (field, value)
        seen[key] = seen.get(key, 0) + 1
        p.error(message, field, value, seen[key])

    # Iterative, and not into google.protobuf messages (a backbone's Struct params may nest
    # deeply and hold no mtrec fields).
    stack = [(pipeline, "")]
    while stack:
        message, path = stack.pop()
        children = []
        for field, value in message.ListFields():
            name = field.name
            where = f"{path}.{name}" if path else name
            repeated = (field.is_repeated if hasattr(field, "is_repeated")
                        else field.label == field.LABEL_REPEATED)
            values = list(value) if repeated else [value]
            if field.message_type is not None:
                if field.message_type.full_name.startswith("mtrec."):
                    children += [(v, f"{where}[{i}]" if repeated else where)
                                 for i, v in enumerate(values)]
                continue
            if field.cpp_type == field.CPPTYPE_STRING and name in (
                    _ACTIVATIONS + _OPTIONAL_ACTIVATIONS):
                for v in values:
                    if (v or name in _ACTIVATIONS) and keras_activation(v) is None:
                        report(f"{where}: {unknown_activation(v)}", name, v)
                continue
            rule = _rule(name) if field.cpp_type in (field.CPPTYPE_FLOAT,
                                                      field.CPPTYPE_DOUBLE) else None
            if rule is None:
                continue
            test, requirement = rule
            for v in values:
                if not test(v):
                    report(f"{where} must be {requirement}, got {v:.7g}.", name, float(v))
        stack += reversed(children)
