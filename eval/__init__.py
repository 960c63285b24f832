"""Evaluation metrics for generated talking-human clips (video + speech).

Standalone: imports nothing from ``magihuman``. Entry points: ``score`` (Python) and
``eval.cli:main`` (the ``magihuman-eval`` command).
"""

from .api import EvalConfig, score
from .errors import EvalInputError, MetricUnavailable, WeightsUnavailable
from .io import Audio, Video, read_audio, read_video, write_video
from .metrics import METRICS, Metric, MetricSpec, Output

__all__ = [
    "METRICS",
    "Audio",
    "EvalConfig",
    "EvalInputError",
    "Metric",
    "MetricSpec",
    "MetricUnavailable",
    "Output",
    "Video",
    "WeightsUnavailable",
    "read_audio",
    "read_video",
    "score",
    "write_video",
]
