"""One block's work (``medxfer.data.cache.blocks``): the block's process running out of memory fails
the job, never records the image as bad. No Ray: the block function runs in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from medxfer.errors import MedxferError

_OOM = """
import json, resource, sys
import pandas as pd
from medxfer.config import PreprocessConfig
from medxfer.data.cache.blocks import process_block

big, small, shards = sys.argv[1], sys.argv[2], sys.argv[3]
spec = PreprocessConfig(size=2048, channels=3).model_dump_json()
warm = pd.DataFrame({"row": [0], "path": [small], "label": ["a"], "split": ["train"]})
process_block(warm, spec, shards + "-warm", 10**12)  # every library loaded, every pool started
vm = int(next(ln for ln in open("/proc/self/status") if ln.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 32 * 2**20, resource.RLIM_INFINITY))  # 32 MiB more, no more
batch = pd.DataFrame({"row": [1, 2], "path": [big, small], "label": ["a", "b"], "split": ["train", "train"]})
try:
    meta = process_block(batch, spec, shards, 10**12)
    print(json.dumps({"raised": None, "errors": meta["error"].tolist()}))
except BaseException as e:
    print(json.dumps({"raised": type(e).__name__, "message": str(e)}))
"""


def test_running_out_of_memory_fails_the_job_instead_of_skipping_the_image(test_data, tmp_path):
    """A real MemoryError in the block's own process (its address space capped just above what it
    uses, then a 2373x2373 JPEG preprocessed to 2048 px: the decode worker, which has its own budget,
    decodes it, and the 48 MB tensor it sends back does not fit): not a bad file, but a failed job
    with nothing cached."""
    big = test_data / "images" / "cxr" / "cxr_rgb_2373x2373.jpg"
    small = test_data / "images" / "cxr" / "nih_00000001_000_cardiomegaly.png"
    shards = tmp_path / "shards"
    r = subprocess.run([sys.executable, "-c", _OOM, str(big), str(small), str(shards)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["raised"] == MedxferError.__name__, out
    assert "this process ran out of memory while preprocessing" in out["message"]
    assert "nothing was cached" in out["message"] and str(big) in out["message"]
    assert not shards.exists()


def test_a_block_holds_no_decoded_image_only_the_small_tensors(test_data):
    """Decoding happens in the decode worker: the block's own process never holds an image's
    full-resolution pixels, only file bytes (twice while they are sent) and the small tensors. (Keeping decoded pixels cost 12-27 % more CPU per image, and a block
    of large photos would not fit a task's memory.)"""
    import tracemalloc

    from medxfer.config import PreprocessConfig
    from medxfer.data.cache.blocks import _preprocess_all
    from medxfer.data.decode.sandbox import DecodeLimits

    png = str(test_data / "images" / "cxr" / "nih_00000001_000_cardiomegaly.png")
    spec = PreprocessConfig(size=64, channels=1, clahe=True).model_dump_json()  # CLAHE: decoded at full size

    def peak(n: int) -> int:
        _preprocess_all([png], spec, DecodeLimits())  # the worker started outside the measurement
        tracemalloc.start()
        try:
            done = _preprocess_all([png] * n, spec, DecodeLimits())
            top = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(done) == n and all(err is None for _, err, _ in done)
        return top

    held = 2 * os.path.getsize(png) + 64 * 64 * 4  # per image: its file's bytes (and in the call's message), its tensor
    assert peak(8) < 8 * held + 256 * 1024 < 512 * 512 * 4 * 8, "decoded pixels reached the block's process"
