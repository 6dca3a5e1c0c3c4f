"""Applying a trained model: reading ``model.pt``, predicting on new recordings, describing it.

* :mod:`mercl.inference.model_file` - read and check ``model.pt`` (written by
  :mod:`mercl.training.model_export`), rebuild its model.
* :mod:`mercl.inference.predict` - ``mercl predict``: prepare new recordings with the model's
  preprocessing, score them, write ``segments.csv``/``trials.csv``/``metrics.json``.
* :mod:`mercl.inference.info` - ``mercl info``.
"""
