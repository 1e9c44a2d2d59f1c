"""samflow.ops.arrays.finite_array: the one numbers-and-finite check of user arrays, naming the argument."""

import numpy as np
import pytest

from samflow.errors import InputError
from samflow.ops.arrays import finite_array


def test_numbers_become_float64():
    arr = finite_array([[1, 2], [3, 4]], "points")
    assert arr.dtype == np.float64 and arr.shape == (2, 2)


@pytest.mark.parametrize("value, message", [
    ([[1.0, np.nan]], "points contains NaN or infinite values"),
    ([np.inf], "points contains NaN or infinite values"),
    ("abc", "points must be numeric, got str"),
    ([[1, 2], [3]], "points must be numeric, got list"),
])
def test_bad_values_name_the_argument(value, message):
    with pytest.raises(InputError, match=message):
        finite_array(value, "points")
