"""Image grids: each tile is its image, clipped to the value range, in grey or colour."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from diffsolve.plotting import image_grid  # noqa: E402


def test_image_grid_places_each_image_in_its_tile():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 1, 8, 8, generator=g) * 2 - 1  # values in [-1, 1]
    images[0, 0, 0, 0] = 3.0  # clipped to white
    fig = image_grid(images, nrow=3)
    canvas = fig.axes[0].images[0].get_array()
    assert canvas.shape == (2 * 9 + 1, 3 * 9 + 1)  # 2 rows of 3, one-pixel gaps
    for i in range(5):
        r, c = divmod(i, 3)
        tile = torch.as_tensor(canvas[1 + 9 * r : 9 + 9 * r, 1 + 9 * c : 9 + 9 * c])
        torch.testing.assert_close(tile, ((images[i, 0] + 1) / 2).clamp(0, 1), rtol=0, atol=1e-6)
    rgb = image_grid(torch.zeros(4, 3, 4, 4)).axes[0].images[0].get_array()
    assert rgb.shape == (2 * 5 + 1, 2 * 5 + 1, 3)


def test_image_grid_refuses_what_is_not_an_image_batch():
    with pytest.raises(ValueError, match="images must be a tensor"):
        image_grid(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="value_range"):
        image_grid(torch.zeros(1, 1, 2, 2), value_range=(1.0, 1.0))
