"""Where the shared real data lives (see ``bench.common.shared_data_dir``); tests that need it skip when absent."""

from bench.common import shared_data_dir

SHARED_DATA = shared_data_dir()
SPEECH_DIR = SHARED_DATA / "speech"
LUMA_DIR = SHARED_DATA / "luma-dev"
