import torch

from steprl.core import group_filter


def _groups(accs, k=4):
    """Groups of k samples whose correct counts are acc * k (PRIME spec §1.11, test 6)."""
    correct = torch.tensor([float(i < round(a * k)) for a in accs for i in range(k)])
    return correct, torch.arange(len(accs)).repeat_interleave(k)


def test_prime_accuracy_band_keeps_the_middle_groups():
    correct, gids = _groups([0, 0.25, 0.5, 0.75, 1])
    keep = group_filter(correct, correct, gids, acc_band=(0.2, 0.8))
    # groups 1, 2, 3 (accuracies .25, .5, .75) stay: rows 4..15
    assert keep.tolist() == [False] * 4 + [True] * 12 + [False] * 4


def test_zero_variance_drops_all_equal_groups_and_nothing_else():
    outcome = torch.tensor([1.0, 1.0, 0.5, 0.5, 0.0, 1.0, 0.3, 0.3])
    gids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    keep = group_filter(outcome, (outcome == 1).float(), gids, zero_variance=True)
    assert keep.tolist() == [False, False, False, False, True, True, False, False]


def test_no_filter_keeps_every_row():
    correct, gids = _groups([0, 1])
    assert group_filter(correct, correct, gids).all()


def test_truncation_drops_the_whole_group_of_a_truncated_response():
    """PRIME spec §1.11 test 6: any truncated response drops its group (here on top of the accuracy band)."""
    correct, gids = _groups([0.25, 0.5, 0.75])
    truncated = torch.zeros(12, dtype=torch.bool)
    truncated[5] = True  # one response of group 1
    keep = group_filter(correct, correct, gids, acc_band=(0.2, 0.8), truncated=truncated)
    assert keep.tolist() == [True] * 4 + [False] * 4 + [True] * 4
    assert group_filter(correct, correct, gids, truncated=torch.zeros(12, dtype=torch.bool)).all()


def test_acc_band_uses_the_mean_outcome():
    """Issue 15 item 5: PRIME's band is on the group's mean outcome (the reference), not on the fully-correct
    flag. Group 0: four code rewards of 0.5 (no response fully correct): mean 0.5 -> kept; group 1: (1, 1, 1, 0.9)
    mean 0.975 -> dropped; group 2: (0.1, 0, 0, 0.3) mean 0.1 -> dropped; group 3: (1, 0, 0.5, 0) mean 0.375 -> kept."""
    outcome = torch.tensor([0.5] * 4 + [1, 1, 1, 0.9] + [0.1, 0, 0, 0.3] + [1, 0, 0.5, 0])
    correct = (outcome >= 1).float()
    gids = torch.arange(4).repeat_interleave(4)
    keep = group_filter(outcome, correct, gids, acc_band=(0.2, 0.8))
    assert keep.tolist() == [True] * 4 + [False] * 8 + [True] * 4
