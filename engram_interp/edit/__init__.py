"""Memory editing: write facts into an Engram model by changing only its table rows.

* ``facts``: the facts file and counterfactual facts from the ``facts_world`` suite;
* ``rows``: which rows a text reads, trainable row offsets, the edit record (apply / revert);
* ``method``: projected gradient descent on the rows the facts read (docs/EDIT.md);
* ``evaluate``: efficacy, generalisation, specificity, collateral, rows changed, with intervals;
* ``save``: the edited model written as a new checkpoint, the source never touched.
"""


def edit_and_evaluate(model, facts, config=None, progress=None, **evaluate_kwargs) -> dict:
    """Compute the edit of ``facts`` (``method.edit_rows``) and measure it (``evaluate.evaluate_edit``),
    leaving ``model`` unchanged. Returns the evaluation dict plus ``trace`` (the optimisation) and
    ``record`` (the :class:`~engram_interp.edit.rows.EditRecord`, to apply or save)."""
    from engram_interp.edit.evaluate import evaluate_edit
    from engram_interp.edit.method import EditConfig, edit_rows

    record, trace = edit_rows(model, facts, config or EditConfig(), progress=progress)
    return {**evaluate_edit(model, facts, record, **evaluate_kwargs), "trace": trace, "record": record}
