import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests share 2 cores; one thread per test keeps timings stable and results deterministic.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_train_overrides(tmp_path):
    """Overrides that turn any stage config into a seconds-long run on a Fashion-MNIST subset."""
    return [f"output_dir={tmp_path / 'runs'}", "data.max_train_items=600", "data.max_test_items=200",
            "train.epochs=2", "train.batch_size=64", "train.max_steps_per_epoch=3",
            "runtime.progress=false", "runtime.device=cpu"]
