"""Error types raised for bad inputs or missing model files."""


class EvalInputError(ValueError):
    """An input (file, array, metric name, option) is not what the metric expects."""


class MetricUnavailable(RuntimeError):
    """The metric cannot be computed for this input (e.g. no face for SyncNet).

    ``score`` turns this into an ``available: false`` entry with the message as reason,
    so a metric that cannot run never produces a number.
    """


class WeightsUnavailable(MetricUnavailable):
    """A metric's model weights are missing or cannot be loaded safely."""
