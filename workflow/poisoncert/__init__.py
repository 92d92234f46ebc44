"""poisoncert: certified defenses against training-data poisoning by aggregation.

The maths lives in :mod:`poisoncert.certify` (pure numpy, no I/O); a scheme's, certificate's,
learner's and dataset's meaning in :mod:`poisoncert.registry`; the public scores format in
:mod:`poisoncert.scores`; the workflow's stages (one module per Snakemake rule) in
:mod:`poisoncert.stages`, driven through ``poisoncert <verb>``.

Certify an ensemble trained elsewhere under its threat model:

>>> import numpy as np, poisoncert
>>> scores = np.zeros((1, 4, 3), np.float32); scores[..., 0] = 1    # 4 base models vote class 0
>>> int(poisoncert.compute("dpa", "dpa", scores, {}).radius[0])        # one model per poison
2
>>> int(poisoncert.compute("dpa_star", "dpa", scores, {"k": 2, "d": 2}).radius[0])  # 2 partitions x 2 seeds
1
"""

from importlib.metadata import PackageNotFoundError, version

from . import certify, registry
from .errors import PoisonCertError
from .registry import compute, predict
from .scores import read_scores, write_scores

try:
    __version__ = version("poisoncert")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["certify", "registry", "compute", "predict", "read_scores", "write_scores", "PoisonCertError", "__version__"]
