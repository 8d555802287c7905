import os

# Tests never reach a model hub, whatever the machine's network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# Before torch loads OpenMP: busy-waiting threads make a loaded 2-core machine 10-20 times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
