"""Error types raised for bad inputs or missing model files."""


class EvalInputError(ValueError):
    """An input (file, array, metric name, option) is not what the metric expects."""


class WeightsUnavailable(RuntimeError):
    """A metric's model weights are missing or cannot be loaded safely.

    ``score`` turns this into an ``available: false`` entry with the message as reason,
    so a missing model never produces a number.
    """
