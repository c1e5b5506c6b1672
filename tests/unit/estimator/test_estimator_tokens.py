"""Token estimates scale with size and type, and follow observed calibration."""

from services.estimator.decompose import extract_features
from services.estimator.tokens import TokenCalibration, estimate_tokens

FEATURES = extract_features("Add export endpoint", "Export tasks as CSV from the API.")


def test_bigger_tasks_need_more_tokens() -> None:
    small = estimate_tokens(1, "feature", FEATURES)
    large = estimate_tokens(8, "feature", FEATURES)
    assert large.input > small.input
    assert large.output > small.output
    assert 0 < small.cached_input <= small.input


def test_task_type_scales_the_estimate() -> None:
    docs = estimate_tokens(3, "docs", FEATURES)
    refactor = estimate_tokens(3, "refactor", FEATURES)
    assert refactor.input > docs.input


def test_calibration_corrects_by_observed_ratio() -> None:
    calibration = TokenCalibration(factors={"bug": 2.0})
    plain = estimate_tokens(5, "bug", FEATURES)
    corrected = estimate_tokens(5, "bug", FEATURES, calibration)
    other_type = estimate_tokens(5, "feature", FEATURES, calibration)
    assert corrected.input == round(plain.input * 2)
    assert corrected.output == plain.output * 2
    assert other_type == estimate_tokens(5, "feature", FEATURES)  # default factor 1.0


def test_calibration_from_ratios_needs_enough_samples_and_balances_errors() -> None:
    calibration = TokenCalibration.from_ratios({"bug": [2.0, 0.5, 1.0], "docs": [3.0]})
    assert calibration.factor("bug") == 1.0  # 2x and 0.5x cancel in the geometric mean
    assert calibration.factor("docs") == 1.0  # one run is not evidence
    skewed = TokenCalibration.from_ratios({"bug": [1.5, 1.5, 1.5, 1000.0]})
    assert 1.5 < skewed.factor("bug") <= 10.0
