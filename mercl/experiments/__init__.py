"""The paper's experiments as one command (``mercl experiment``) and their report (``mercl report``).

* :mod:`mercl.experiments.runner`: method x fold units, cached per unit in RUN_DIR/cache/.
* :mod:`mercl.experiments.tables`: the paper-style tables (mean ± std over folds, gap columns).
* :mod:`mercl.experiments.report`: report.md / report.html with PNG figures.
"""

from mercl.experiments.runner import Experiment, Row, experiment_rows, protocols_of, run_experiment

__all__ = ["Experiment", "Row", "experiment_rows", "protocols_of", "run_experiment"]
