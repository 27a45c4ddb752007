"""The main job (``bnmft reproduce``): every figure of the paper, the checks, ``report.md`` and ``report.html``.

* :mod:`.main_job` - :func:`~bnmft.report.main_job.reproduce`: runs the sections in order and writes the reports
  (a summary first: the claims and their verdicts, the number of checks that pass, links to the sections);
* :mod:`.section` - what the sections share: the :class:`~bnmft.report.section.Check` and
  :class:`~bnmft.report.section.Claim` records, the run's context (with the cache of finished simulations) and
  the interface every section implements (``run``, ``checks``, ``claims``, ``text``, ``appendix``);
* one module per report section: :mod:`.theory`, :mod:`.simulation`, :mod:`.width`, :mod:`.residual`,
  :mod:`.conv`, :mod:`.training`;
* :mod:`.figures` - the paper's simulation figures; :mod:`.plots` - matplotlib figures (imported lazily),
  also drawn by the CLI's ``--plot``; :mod:`.html` - the self-contained ``report.html``.

Nothing is imported here, so ``bnmft theory --plot`` loads only :mod:`.plots`.
"""
