"""A crossover between two scaling curves is only as sure as the points beside it."""

from __future__ import annotations

from harness import figures


def _cell(value: float, half: float, marks: tuple[str, ...] = ()) -> dict:
    return {"value": value, "low": value - half, "high": value + half,
            "marks": [{"mark": m, "kind": "trust"} for m in marks]}


CROSS = {"arch": "a", "other_arch": "b", "value": 300.0, "points": {"x": [128, 256, 512]}}


def test_a_crossover_between_separated_points_is_resolved() -> None:
    cells = {("a", 256): _cell(1.0, 0.1), ("b", 256): _cell(2.0, 0.1),
             ("a", 512): _cell(4.0, 0.1), ("b", 512): _cell(3.0, 0.1)}
    assert figures.crossover_doubt(CROSS, cells) == ""


def test_overlapping_cis_or_a_marked_point_beside_it_leave_it_unresolved() -> None:
    cells = {("a", 256): _cell(1.0, 0.6), ("b", 256): _cell(2.0, 0.6),
             ("a", 512): _cell(4.0, 0.1), ("b", 512): _cell(3.0, 0.1, ("noisy",))}
    assert figures.crossover_doubt(CROSS, cells) == \
        "at 256: the 95% CIs overlap; at 512: b noisy"
    # a point far from the crossover does not matter
    cells = {**cells, ("a", 256): _cell(1.0, 0.1), ("b", 256): _cell(2.0, 0.1),
             ("a", 128): _cell(1.0, 5.0, ("contended",))}
    assert figures.crossover_doubt(CROSS, cells) == "at 512: b noisy"
