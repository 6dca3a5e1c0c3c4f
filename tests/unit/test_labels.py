"""Label schemes on rating tables: boundaries, quadrants, SEED labels, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mercl.data.labels import (
    SCHEMES,
    Thresholds,
    assign_labels,
    available_schemes,
    class_counts,
    class_names,
)
from mercl.errors import MerclError

BOUNDARIES = [1.0, 3.0, 3.01, 5.0, 5.01, 6.0, 6.01, 9.0]


@pytest.mark.parametrize("rating", ["valence", "arousal", "dominance"])
def test_binary_boundary_at_five(rating):
    table = pd.DataFrame({rating: BOUNDARIES})
    assert assign_labels(table, f"{rating}2").tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize("rating", ["valence", "arousal", "dominance"])
def test_ternary_boundaries_at_three_and_six(rating):
    table = pd.DataFrame({rating: BOUNDARIES})
    assert assign_labels(table, f"{rating}3").tolist() == [0, 0, 1, 1, 1, 1, 2, 2]


def test_quadrants_on_a_pyarrow_table():
    table = pa.table(
        {
            "valence": pa.array([7.0, 2.0, 2.0, 7.0, 5.0, 5.01], pa.float32()),
            "arousal": pa.array([7.0, 7.0, 2.0, 2.0, 5.01, 5.0], pa.float32()),
        }
    )
    # HVHA, LVHA, LVLA, HVLA, then the boundary: 5.0 is low, 5.01 is high
    assert assign_labels(table, "quadrant4").tolist() == [0, 1, 2, 3, 1, 3]
    assert class_names("quadrant4") == ("HVHA", "LVHA", "LVLA", "HVLA")


def test_seed_labels_shift_to_zero_based():
    labels = assign_labels({"label": np.array([-1, 0, 1, 1])}, "seed3")
    assert labels.tolist() == [0, 1, 2, 2]
    assert labels.dtype == np.int64
    with pytest.raises(MerclError, match="must be -1, 0 or 1"):
        assign_labels({"label": np.array([2])}, "seed3")


def test_custom_thresholds():
    table = pd.DataFrame({"valence": [4.0, 4.5, 7.5, 8.0]})
    assert assign_labels(table, "valence2", Thresholds(binary=4.5)).tolist() == [0, 0, 1, 1]
    assert assign_labels(table, "valence3", {"ternary": (4.0, 7.5)}).tolist() == [0, 1, 1, 2]


def test_unknown_scheme_lists_the_known_ones():
    with pytest.raises(MerclError) as info:
        assign_labels(pd.DataFrame({"valence": [1.0]}), "happiness2")
    message = str(info.value)
    assert "happiness2" in message and "\n" not in message
    for scheme in SCHEMES:
        assert scheme in message


def test_missing_column_is_a_clear_error():
    with pytest.raises(MerclError, match="'quadrant4' needs a 'arousal' column, the data has: valence"):
        assign_labels(pd.DataFrame({"valence": [1.0]}), "quadrant4")
    with pytest.raises(MerclError, match="needs a 'label' column"):
        assign_labels(pd.DataFrame({"valence": [1.0]}), "seed3")


def test_available_schemes_and_counts():
    assert available_schemes(["subject", "label"]) == ["seed3", "class2", "seed4", "seed5", "faced9", "faced3"]
    assert available_schemes(["label"], pd.DataFrame({"label": [-1, 0, 1]})) == ["seed3"]
    assert available_schemes(["label"], pd.DataFrame({"label": [0, 1]})) == ["class2"]
    deap = available_schemes(["valence", "arousal", "dominance", "liking"])
    assert deap == ["valence2", "arousal2", "dominance2", "valence3", "arousal3", "dominance3", "quadrant4"]
    assert available_schemes(["valence"]) == ["valence2", "valence3"]
    counts = class_counts(pd.DataFrame({"valence": [1.0, 9.0, 9.0]}), "valence2")
    assert counts == {"low valence": 1, "high valence": 2}


def test_class2_keeps_binary_labels_and_rejects_others():
    import pandas as pd

    from mercl.errors import MerclError

    assert assign_labels(pd.DataFrame({"label": [0, 1, 1]}), "class2").tolist() == [0, 1, 1]
    with pytest.raises(MerclError, match="class2"):
        assign_labels(pd.DataFrame({"label": [0, 2]}), "class2")
