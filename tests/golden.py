"""Where the recorded transcripts of the real mox server are (``../shared/golden-mox``)."""

from __future__ import annotations

import os
from pathlib import Path

#: ``MOXTW_GOLDEN_DIR`` if set, else ``shared/golden-mox`` beside the repository (as CI has it).
GOLDEN_DIR = Path(
    os.environ.get("MOXTW_GOLDEN_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "golden-mox"
)
