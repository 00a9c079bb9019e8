"""Whether an explanation can be trusted: ``faithfulness`` (Average Drop / Increase in
Confidence), ``removal`` (deletion, insertion, ROAD) and ``sanity`` (model randomisation).

Nothing is imported here on purpose: the modules load SciPy and scikit-image, which
``import s9lib.evaluate.faithfulness`` alone should not pay for.
"""
