"""What a reader sees: ``viz`` (figures: functions take data and return a matplotlib
``Figure``), ``widgets`` (sliders over precomputed frames, live in the static HTML book) and
``book`` (running chapters and the Colab bootstrap cell).

Nothing is imported here: matplotlib and ipywidgets load with the module that needs them.
"""
