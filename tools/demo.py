#!/usr/bin/env python
"""The README's demo. (Until pre-training lands: the per-width table of slimmable ResNet-50.)"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.exit(subprocess.call([sys.executable, str(ROOT / "tools/analyze_model.py"), "--config-file",
                          str(ROOT / "configs/Base-SlimCLR.yaml")]))
