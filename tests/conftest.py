import os
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_main_module():
    """streamlit's AppTest replaces sys.modules['__main__'] with the page it ran; a later
    multiprocessing 'spawn' pool (data tokenize) would then re-run that page in its workers."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
    assert torch.is_grad_enabled(), "a test (or the code it ran) switched autograd off globally"


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory):
    """Saved tiny checkpoints of every kind: {kind: path}."""
    import engram_interp as ei
    from engram_interp.testing import tiny_model

    root = tmp_path_factory.mktemp("ckpts")
    return {kind: ei.save(tiny_model(kind), root / f"{kind}.ckpt") for kind in ("dense", "moe", "engram", "engram-null", "mhc")}
