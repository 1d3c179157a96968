import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
# Under pytest-xdist each worker gets one core's worth of threads; alone, use up to two.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, torch.get_num_threads()) // _workers))
