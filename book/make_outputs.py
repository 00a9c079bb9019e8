"""Refresh the chapters' stored outputs with a real run: ``python book/make_outputs.py [--fast] [CHAPTER ...]``.

The same as ``python -m s9lib.book``: each chapter listed in ``_toc.yml`` (or each one named)
is executed top to bottom in a fresh kernel, with the full data unless ``--fast``, with the
notebook's folder as working directory, and its outputs and widget state are written back.
Run it on a GPU machine for the chapters that train. The chapters print where their numbers
came from (mode, device, data size), so the stored outputs say how they were made.
"""

from s9lib.book import main

if __name__ == "__main__":
    raise SystemExit(main())
