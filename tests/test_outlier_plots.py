"""The outlier-state figures (bnmft.report.outlier_plots): they draw the map and the fixed points the theory gives,
and refuse bad batch sizes."""

import math

import numpy as np
import pytest

from bnmft import outlier_state
from bnmft.errors import InputError
from bnmft.report import outlier_plots


def test_the_map_figure_draws_f_over_rho_and_marks_the_fixed_points(tmp_path, monkeypatch):
    saved = {}
    real = outlier_plots.save_figure

    def keep(fig, path, dpi=150):
        saved["axes"] = fig.axes[0]
        return real(fig, path, dpi=dpi)

    monkeypatch.setattr(outlier_plots, "save_figure", keep)
    path = outlier_plots.plot_outlier_map(tmp_path / "map.png", batch_sizes=(32, 128, math.inf))
    assert path.read_bytes()[:4] == b"\x89PNG"
    lines = saved["axes"].get_lines()
    curves = [ln for ln in lines if len(ln.get_xdata()) > 1 and ln.get_label() == "B = 128"]
    x, y = curves[0].get_xdata(), curves[0].get_ydata()
    assert np.allclose(y, outlier_state("relu", 128).map(x) / x, rtol=1e-12)
    marks = sorted(ln.get_xdata()[0] for ln in lines if len(ln.get_xdata()) == 1 and ln.get_color() == "C1")
    assert marks == pytest.approx([1.0, 1.20383, 25.4983], rel=1e-4)  # B = 128: BSB1, saddle, outlier state


def test_the_bifurcation_figure(tmp_path):
    path = outlier_plots.plot_bifurcation(tmp_path / "fold.png", batch_sizes=[16, 64, 128])
    assert path.exists() and path.stat().st_size > 1000
    with pytest.raises(InputError, match="finite"):
        outlier_plots.plot_bifurcation(tmp_path / "x.png", batch_sizes=[64, math.inf])
    with pytest.raises(InputError, match="batch_size"):
        outlier_plots.plot_outlier_map(tmp_path / "x.png", batch_sizes=(3,))
    with pytest.raises(InputError, match="at least one"):
        outlier_plots.plot_outlier_map(tmp_path / "x.png", batch_sizes=())
