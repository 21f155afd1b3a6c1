"""The degenerate-proposal warning: one deer taking most proposals, or similarities bunched near 1."""

from deer_reid_assets.core.proposal_checks import degenerate_proposals


def test_healthy_proposals_give_no_warning():
    spread = [(f"deer{i % 5}", 0.3 + 0.05 * (i % 9)) for i in range(40)]
    assert degenerate_proposals(spread) is None
    assert degenerate_proposals(spread[:5]) is None  # too few to judge


def test_one_deer_and_bunched_similarities_are_flagged():
    one_doe = [("doe-7", 0.99 + 0.0001 * i) for i in range(30)] + [("buck-1", 0.991)] * 5
    warning = degenerate_proposals(one_doe)
    assert warning.startswith("degenerate proposals") and "85.7% of the proposals go to one deer" in warning
    assert "bunched near 1" in warning
    bunched = [(f"deer{i % 6}", 0.985 + 0.0002 * i) for i in range(30)]
    assert "one deer" not in degenerate_proposals(bunched) and "bunched" in degenerate_proposals(bunched)
