import numpy as np

from scmulan.datasets._synthetic_counts import BLOCK_ROWS, sample_counts


def _draw(n_cells, shape, dropout=0.0, seed=0):
    rng = np.random.default_rng(seed)
    logits = np.log(np.array([[1.0, 2.0, 5.0, 12.0], [12.0, 5.0, 2.0, 1.0]]))
    groups = np.arange(n_cells) % 2
    library = np.full(n_cells, 40.0)
    nb_shape = (np.full((1, 4), shape), np.zeros(n_cells, dtype=int))
    counts = sample_counts([(logits, groups)], library, nb_shape, np.full(n_cells, dropout), rng)
    mean = library[:, None] * np.exp(logits[groups]) / np.exp(logits[groups]).sum(1, keepdims=True)
    return counts.toarray(), mean, groups


def test_mean_and_overdispersion_match_the_negative_binomial():
    n_cells, shape = 3 * BLOCK_ROWS + 17, 2.0  # several blocks and a partial one
    counts, mean, groups = _draw(n_cells, shape)
    for g in (0, 1):
        rows = groups == g
        mu = mean[rows][0]
        np.testing.assert_allclose(counts[rows].mean(0), mu, rtol=0.1)
        np.testing.assert_allclose(counts[rows].var(0), mu + mu**2 / shape, rtol=0.25)


def test_dropout_removes_lowly_expressed_entries():
    base, mean, _ = _draw(4000, 50.0, dropout=0.0)
    dropped, _, _ = _draw(4000, 50.0, dropout=0.9)
    low, high = np.argmin(mean[0]), np.argmax(mean[0])
    rows = slice(0, None, 2)
    assert (dropped[rows, low] > 0).mean() < 0.8 * (base[rows, low] > 0).mean()
    assert (dropped[rows, high] > 0).mean() > 0.95 * (base[rows, high] > 0).mean()


def test_blocks_assemble_into_a_valid_csr():
    rng = np.random.default_rng(1)
    table = rng.normal(size=(3, 50))
    index = rng.integers(3, size=BLOCK_ROWS + 5)
    counts = sample_counts(
        [(table, index)],
        np.full(len(index), 30.0),
        (np.ones((1, 50)), np.zeros(len(index), int)),
        np.zeros(len(index)),
        rng,
    )
    counts.check_format(full_check=True)
    assert counts.has_sorted_indices
    assert counts.shape == (BLOCK_ROWS + 5, 50)
    assert (counts.data > 0).all()
