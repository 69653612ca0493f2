"""Serve the generator: a FastAPI service, its web page, image storage and an AWS Lambda handler.

Start it (the model loads once; it binds to loopback unless told otherwise)::

    python -m animegen_utils.serve --model tiny --host 127.0.0.1 --port 8000
    animegen serve --port 8000                      # the same, as a console script

Then open http://127.0.0.1:8000/ or::

    curl -s -X POST localhost:8000/api/generate -H 'content-type: application/json' \\
         -d '{"emotion": "happy", "style": "casual", "seed": 42}'

Modules: ``core`` (validation, generation, storing; shared with Lambda), ``app`` (FastAPI),
``storage`` (local folder or S3), ``settings``, ``lambda_handler``, ``background`` (start the
service as a subprocess from a notebook or a test), ``browser`` (drive the page in Chromium),
``records`` (one database row per image: SQLite or PostgreSQL, Alembic migrations, ``check``),
``history`` (``/api/generations`` and the ``/gallery`` page).
Needs the ``serve`` extra: ``pip install "animegen[serve]"``.
"""

from .core import GenerateRequest, ServeCore, load_model, save_generation
from .settings import ServeSettings
from .storage import LocalStorage, S3Storage, Storage, StorageSettings, make_storage

__all__ = ["GenerateRequest", "ServeCore", "ServeSettings", "Storage", "StorageSettings", "LocalStorage",
           "S3Storage", "load_model", "make_storage", "save_generation"]
