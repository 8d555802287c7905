"""The dictionary: the crosscoder and its activations (`model`), the checkpoint formats it is read
from (`checkpoints`) and its reconstruction statistics (`reconstruction`)."""
