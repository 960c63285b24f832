"""The pipeline's stage names, in run order: defined once, timed by ``MagiHumanPipeline.generate``
(``GenerationResult.timings`` / ``step_times``), and the columns the results store and report show.

Torch-free on purpose: the report reads them without importing the model.
"""

from __future__ import annotations

TEXT_ENCODE = "text_encode"
IMAGE_ENCODE = "image_encode"  # TI2V: the reference image (again at the SR size when there is an SR stage)
AUDIO_ENCODE = "audio_encode"  # A2V: the given speech
BASE_DENOISE = "base_denoise"
SR_DENOISE = "sr_denoise"
VIDEO_DECODE = "video_decode"
AUDIO_DECODE = "audio_decode"
MUX = "mux"

STAGES: tuple[str, ...] = (TEXT_ENCODE, IMAGE_ENCODE, AUDIO_ENCODE, BASE_DENOISE, SR_DENOISE, VIDEO_DECODE,
                           AUDIO_DECODE, MUX)  # fmt: skip
DENOISE_STAGES: tuple[str, ...] = (BASE_DENOISE, SR_DENOISE)
"""The stages that run the DiT, one timed step per sampler step."""
