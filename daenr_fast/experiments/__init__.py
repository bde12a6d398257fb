"""The paper's experiments: ``daenr reproduce`` (Tables 2-6, Figures 2-4) and ``daenr demo``.

* :mod:`.tables` - which runs (model, layer, region, alpha:beta preset, neuron subset) make which cells and claims;
* :mod:`.protocol` - the paper's training protocol and ``--quick``, and the choices where the paper is silent;
* :mod:`.sweep` / :mod:`.worker` - the resumable, parallel sweep (``results.csv``, one row per run);
* :mod:`.stats` / :mod:`.claims` - means over seeds with 95% t-intervals, paired differences, verdicts;
* :mod:`.report` / :mod:`.figures` - ``report.md`` and Figures 2-4;
* :mod:`.paper_values` - the paper's published numbers (``paper_tables.json``);
* :mod:`.demo` - CAE vs CAE-FR2 on simulated region 3.

The alpha:beta presets (``alpha_beta_presets.csv``) are read by :mod:`daenr_fast.train.presets`.
"""
