"""Track the evaluation metric that picks the best checkpoint, "best" exports and early
stopping watch."""
import json
import logging
import math
import os

from mtrec.errors import TrainingError

log = logging.getLogger("mtrec")

# Keys of an eval_result.txt record that are not metrics.
NOT_METRICS = ("global_step", "num_examples", "checkpoint")
# Metric kinds (the part of a metric key before "_<tower>") where smaller is better.
SMALLER_IS_BETTER = ("logloss", "mean_squared_error", "mean_absolute_error",
                     "root_mean_squared_error")


def eval_history(model_dir: str) -> list[dict]:
    """The evaluations training made, in order, from model_dir/eval_result.txt (one JSON
    object per line, each with its global_step). Lines of one-off `mtrec evaluate` runs
    (they name their "checkpoint") and lines that do not parse are left out."""
    path = os.path.join(model_dir, "eval_result.txt")
    records = []
    if not os.path.exists(path):
        return records
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "global_step" in record and "checkpoint" not in record:
                records.append(record)
    return records


def metric_bigger(export_config, name: str) -> bool:
    """Whether a bigger value of metric `name` is better: metric_bigger if the config sets
    it, else by the metric's kind (smaller for logloss and the error metrics)."""
    if export_config.HasField("metric_bigger"):
        return export_config.metric_bigger
    return not any(name == kind or name.startswith(kind + "_") for kind in SMALLER_IS_BETTER)


class BestMetric:
    """Remembers the best value of one metric over evaluations (also those in an existing
    eval_result.txt, so a resumed job keeps its best and its patience).

    Two records: the best value and its step (the best checkpoint, any improvement), and
    for early stopping the last step that improved on the best by more than
    early_stop_min_delta (its patience restarts there)."""

    def __init__(self, export_config, model_dir: str):
        self.export_config = export_config
        self.wanted = export_config.best_exporter_metric
        self.bigger = None  # known once the metric is
        self.patience = export_config.max_check_steps if export_config.enable_early_stop else 0
        self.min_delta = export_config.early_stop_min_delta
        self.name = None
        self.best = None
        self.best_step = None
        self.best_record = None
        self.reference = None  # early stopping: the value improved on by more than min_delta
        self.reference_step = None
        self.history = eval_history(model_dir)
        for record in self.history:
            self.update(record, remember=False)

    def _resolve(self, result: dict) -> str:
        metrics = [k for k in result if k not in NOT_METRICS]
        if not self.wanted:  # the first tower's first metric
            first = next((k for k in metrics if "/" not in k), None)
            if first is None:
                raise TrainingError("the evaluation reports no metric to pick the best "
                                    "checkpoint by.")
            return first
        if self.wanted in result:
            return self.wanted
        candidates = [k for k in metrics if k.startswith(self.wanted + "_") and "/" not in k]
        if len(candidates) == 1:
            return candidates[0]
        first = next((k for k in metrics if "/" not in k), None)
        if not candidates and first is not None:
            # As `mtrec check` warned: no metrics_set computes it.
            log.warning("export_config.best_exporter_metric %r is not reported (the "
                        "evaluation reports %s); picking the best checkpoint by %s",
                        self.wanted, ", ".join(metrics), first)
            self.wanted = ""
            return first
        raise TrainingError(f"export_config.best_exporter_metric {self.wanted!r} "
                            f"{'is ambiguous' if candidates else 'is not reported'}; "
                            f"the evaluation reports: {', '.join(metrics)}.")

    def _better(self, value: float, than, margin: float = 0.0) -> bool:
        if than is None:
            return True
        return value - margin > than if self.bigger else value + margin < than

    def update(self, result: dict, remember: bool = True) -> bool:
        """Record one evaluation; True if it is the best so far."""
        if remember:
            self.history.append(dict(result))
        if self.name is None:
            self.name = self._resolve(result)
            self.bigger = metric_bigger(self.export_config, self.name)
        value = result.get(self.name)
        if value is None or not math.isfinite(value):
            return False
        step = result["global_step"]
        if self._better(value, self.reference, self.min_delta):
            self.reference, self.reference_step = value, step
        if not self._better(value, self.best):
            return False
        self.best, self.best_step, self.best_record = value, step, dict(result)
        return True

    def rebase(self, step) -> None:
        """Make the evaluation of `step` (None: no evaluation) the best, as when the
        checkpoint of the best one was lost."""
        record = next((r for r in reversed(self.history) if r["global_step"] == step), None)
        value = record.get(self.name) if record else None
        self.best, self.best_step, self.best_record = (
            (value, step, dict(record)) if value is not None else (None, None, None))

    def describe(self) -> str:
        """How the best is chosen, for the log."""
        how = "bigger" if self.bigger else "smaller"
        why = ("best_exporter_metric" if self.wanted else "the first tower's first metric; "
               "set export_config.best_exporter_metric to choose another")
        return f"{self.name} ({how} is better; {why})"

    def should_stop(self, step: int) -> bool:
        """Early stopping: no improvement by more than min_delta for max_check_steps steps."""
        return bool(self.patience and self.reference_step is not None
                    and step - self.reference_step >= self.patience)
