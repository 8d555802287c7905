"""The dictionary: the crosscoder and its activations (`model`), the checkpoint formats it is read
from (`checkpoints`, one module per format under `formats`), the normalisation file read beside a
checkpoint (`normalisation`) and its reconstruction statistics (`reconstruction`)."""
