"""Memory editing: write facts into an Engram model by changing only its table rows.

* ``facts``: the facts file and counterfactual facts from the ``facts_world`` suite;
* ``rows``: which rows a text reads, trainable row offsets, the edit record (apply / revert);
* ``method``: projected gradient descent on the rows the facts read (docs/EDIT.md);
* ``evaluate``: efficacy, generalisation, specificity, collateral, rows changed, with intervals;
* ``save``: the edited model written as a new checkpoint, the source never touched.
"""
