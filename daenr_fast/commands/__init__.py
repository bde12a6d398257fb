"""Sub-commands of the ``daenr`` CLI, one module each (see :mod:`daenr_fast.cli`)."""
