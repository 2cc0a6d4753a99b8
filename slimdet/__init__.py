"""slimdet: SlimCLR (slimmable contrastive self-supervised learning) on Detectron2."""
import warnings

# Detectron2 0.6 scripts a few helpers at import time; torch >= 2.10 warns about it on every run.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)

__version__ = "0.1.0"
