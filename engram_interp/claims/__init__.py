"""What the workbench claims from measured numbers, and how it words it.

* ``findings``: the verdicts over seeds and controls (checkpoints/FINDINGS.md, the report, the app's Overview);
* ``sentences``: the measured sentences each analysis prints (with its controls and intervals).
"""
