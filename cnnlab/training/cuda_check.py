"""Skip an NVML probe that cannot succeed on machines without the NVIDIA driver.

Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, so that ``torch.cuda.is_available()`` asks
NVML instead of initializing CUDA (which would poison ``fork``). Where ``libnvidia-ml`` is missing (no
NVIDIA driver, so no usable GPU), every such call first fails to load the library and then asks the CUDA
runtime anyway, ~30 us a call. torch's optimizers check CUDA-graph capture on every step: with Adam that
was ~100 us a step on a 2-core CPU, ~1% of a small CIFAR CNN's step. Dropping the variable there leaves
the answer unchanged and skips the failed load.
"""

from __future__ import annotations

import ctypes
import os

NVML_CHECK_VARIABLE = "PYTORCH_NVML_BASED_CUDA_CHECK"
NVML_LIBRARY = "libnvidia-ml.so.1"


def skip_unloadable_nvml_check() -> bool:
    """Unset ``PYTORCH_NVML_BASED_CUDA_CHECK`` when NVML cannot be loaded; return whether it was unset."""
    if os.environ.get(NVML_CHECK_VARIABLE) != "1":
        return False
    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        del os.environ[NVML_CHECK_VARIABLE]
        return True
    return False
