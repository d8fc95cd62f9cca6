import os

import pytest
import torch

# Learning tests (@pytest.mark.learning: tests that assert what training or a search reaches) must
# hold on any CPU, seed and kernel. Two switches let CI prove it (.ci/run, bench/learning_matrix.py):
#   HETSEARCH_TEST_SEED=N    the seed the learning tests derive their data and runtime.seed from (default 0)
#   HETSEARCH_TEST_MKLDNN=0  torch.backends.mkldnn off: PyTorch's native CPU kernels instead of oneDNN's
TEST_SEED = int(os.environ.get("HETSEARCH_TEST_SEED", "0"))
if os.environ.get("HETSEARCH_TEST_MKLDNN", "1") == "0":
    torch.backends.mkldnn.enabled = False


def pytest_report_header(config):
    return (f"hetsearch: HETSEARCH_TEST_SEED={TEST_SEED}, mkldnn {'on' if torch.backends.mkldnn.enabled else 'off'}, "
            f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'default')}")


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests share 2 cores; one thread per test keeps timings stable and results deterministic.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def learning_seed() -> int:
    """The learning tests' base seed (HETSEARCH_TEST_SEED, default 0): their data and runtime.seed
    derive from it, so a CI leg can rerun them on other draws."""
    return TEST_SEED


@pytest.fixture
def tiny_train_overrides(tmp_path):
    """Overrides that turn any stage config into a seconds-long run on a Fashion-MNIST subset."""
    return [f"output_dir={tmp_path / 'runs'}", "data.max_train_items=600", "data.max_test_items=200",
            "train.epochs=2", "train.batch_size=64", "train.max_steps_per_epoch=3",
            "runtime.progress=false", "runtime.device=cpu"]
