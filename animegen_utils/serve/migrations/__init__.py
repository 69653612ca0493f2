"""Alembic migrations for the generation records, shipped inside the package.

Run them with ``python -m animegen_utils.serve db upgrade`` (or
``animegen_utils.serve.records.upgrade(url)``); the Alembic ``Config`` is built in
code, so there is no ``alembic.ini`` to find after ``pip install``.
"""
