"""What the decode workers' fork server imports once, so that each worker it forks starts decoding at
once: the decoders (OpenCV, Pillow, pydicom with its pixel-data plug-ins), preprocessing, and the
allocator setting every medxfer process runs with (:mod:`medxfer.runtime.allocator`; forked workers inherit
it). Importing this module is all it does; see :mod:`medxfer.data.decode.sandbox`.
"""

from __future__ import annotations

import gc

import cv2
import pydicom  # noqa: F401
import pydicom.encaps  # noqa: F401
import pydicom.pixels  # noqa: F401

import medxfer.data.decode.sandbox  # noqa: F401 - the workers' loop
import medxfer.data.preprocess  # noqa: F401
from medxfer.runtime.allocator import tune_this_process

cv2.setNumThreads(1)  # one worker decodes one file on one core; the caller runs several workers
tune_this_process()
try:  # pydicom finds its plug-ins on first use; do it here, once, for every worker
    from pydicom.pixels import get_decoder

    for _uid in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5"):
        get_decoder(_uid).is_available  # noqa: B018
except Exception:  # noqa: BLE001, S110 - a missing plug-in is reported where a file needs it
    pass
gc.freeze()  # the imports' objects: never scanned by the workers' collector, never written by it
