"""Track the evaluation metric that exporter_type "best" and early stopping watch."""
import json
import math
import os

from mtrec.errors import TrainingError


class BestMetric:
    """Remembers the best value of one metric over evaluations (also those in an existing
    eval_result.txt, so a resumed job keeps its best and its patience)."""

    def __init__(self, export_config, model_dir: str):
        self.wanted = export_config.best_exporter_metric
        self.bigger = export_config.metric_bigger
        self.patience = export_config.max_check_steps if export_config.enable_early_stop else 0
        self.name = None
        self.best = None
        self.best_step = None
        path = os.path.join(model_dir, "eval_result.txt")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        self.update(json.loads(line))

    def _resolve(self, result: dict) -> str:
        if self.wanted in result:
            return self.wanted
        candidates = [k for k in result if k.startswith(self.wanted + "_") and "/" not in k]
        if len(candidates) == 1:
            return candidates[0]
        metrics = ", ".join(k for k in result if k not in ("global_step", "num_examples"))
        raise TrainingError(f"export_config.best_exporter_metric {self.wanted!r} "
                            f"{'is ambiguous' if candidates else 'is not reported'}; "
                            f"the evaluation reports: {metrics}.")

    def update(self, result: dict) -> bool:
        """Record one evaluation; True if it is the best so far."""
        self.name = self.name or self._resolve(result)
        value = result.get(self.name)
        if value is None or not math.isfinite(value):
            return False
        better = (self.best is None or
                  (value > self.best if self.bigger else value < self.best))
        if better:
            self.best, self.best_step = value, result["global_step"]
        return better

    def should_stop(self, step: int) -> bool:
        """Early stopping: no improvement for max_check_steps steps."""
        return bool(self.patience and self.best_step is not None
                    and step - self.best_step >= self.patience)
