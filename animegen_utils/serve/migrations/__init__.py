"""Alembic migrations for the generation records, shipped inside the package.

Run them with ``python -m animegen_utils.serve db upgrade`` (or
``animegen_utils.serve.records.upgrade(url)``); the Alembic ``Config`` is built in
code, so there is no ``alembic.ini`` to find after ``pip install``.

A new revision is a new file in ``versions/`` written by hand after ``0001_generations.py``
(``revision = "0002"``, ``down_revision = "0001"``), with the matching change to the models in
``records.py``; ``tests/test_records.py`` checks that the migrated schema equals the models.
"""
