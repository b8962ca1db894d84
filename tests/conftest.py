import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny problems: torch's thread pool only adds contention on a shared 2-core test machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
