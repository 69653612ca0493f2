"""Sweeps: a grid of images on one process, accelerate ranks or a Ray cluster, resumable, one results table.

    python -m animegen_utils.sweep run sweep.yaml --out outputs/sweep
    accelerate launch --multi_gpu --num_processes 2 -m animegen_utils.sweep run sweep.yaml --out outputs/sweep
    python -m animegen_utils.sweep run sweep.yaml --out outputs/sweep --engine ray [--address HOST:6379]

>>> from animegen_utils.sweep import expand, run, load_results
>>> rows = expand("sweep.yaml")                 # the manifest: one Row per image, id hashed from its parameters
>>> run("sweep.yaml", "outputs/sweep")          # draws and scores only the rows not done yet
>>> load_results("outputs/sweep").to_pylist()[0]["probe_emotion_ok"]
>>> accuracy_by(load_results("outputs/sweep"), ["scheduler", "steps"])   # probe hits per group

The spec (``spec.py``) names axes (a product of values), explicit rows (a list of parameter
dicts, crossed with any axes: ``examples/requests_rows.yaml``) and fixed values of any
``load_pipeline``/``generate`` parameter, and the scorers; ``manifest.py`` expands it into rows and fixed batches; ``worker.py``
draws and scores a batch; ``store.py`` owns the folder (PNGs, Parquet parts, the lock);
``engines.py`` runs the batches on one process, accelerate ranks or Ray actors.
"""

from .engines import ENGINES, RunSummary, launched_by_accelerate, plan, run
from .manifest import Batch, Row, batches, expand, row_id
from .spec import PARAMS, SCORERS, SweepSpec, SweepSpecError, load_spec
from .store import SweepFolderError, SweepLockedError, accuracy_by, compact, folder_lock, load_results

__all__ = ["run", "expand", "load_spec", "load_results", "accuracy_by", "compact", "batches", "plan", "row_id", "folder_lock",
           "launched_by_accelerate", "SweepSpec", "Row", "Batch", "RunSummary", "SweepSpecError",
           "SweepLockedError", "SweepFolderError", "PARAMS", "SCORERS", "ENGINES"]
