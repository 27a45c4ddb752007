"""The main job (``bnmft reproduce``): every figure of the paper, the checks, ``report.md`` and ``report.html``.

* :mod:`.main_job` - :func:`~bnmft.report.main_job.reproduce`: runs the sections in order, caches, writes the
  reports;
* one module per report section: :mod:`.residual`, :mod:`.conv`, :mod:`.width`, :mod:`.training`;
* :mod:`.figures` - the paper's simulation figures; :mod:`.plots` - matplotlib figures (imported lazily),
  also drawn by the CLI's ``--plot``; :mod:`.html` - the self-contained ``report.html``.

Nothing is imported here, so ``bnmft theory --plot`` loads only :mod:`.plots`.
"""
