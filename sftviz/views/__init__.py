"""Views of the core's objects, one concern per module.

* :mod:`sftviz.views.vocab`: the display vocabulary (segments, colours, masking labels and line
  styles, run palettes), and the CSS and JS the front ends get from it;
* :mod:`sftviz.views.records`: the records (plain dicts) that the static HTML, the figures and the
  live widgets all draw;
* :mod:`sftviz.views.html`: the static HTML (standard library only);
* :mod:`sftviz.views.plots`: the matplotlib figures (matplotlib is imported when a figure is drawn);
* :mod:`sftviz.views.export`: figures for slides, ``sv.export_figures`` (the figures and the static
  HTML views as files, light or dark; the HTML views through the system Chromium).

The public import paths stay ``sftviz.render`` (HTML and records), ``sftviz.plots`` (figures) and
``sftviz.widgets`` (live views). The core never imports this package.
"""
